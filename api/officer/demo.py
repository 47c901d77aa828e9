"""Demo accounts, one per role with different scopes: only when ``LPT_DEMO=1`` (make run).

Outside demo mode no account exists until an admin creates one
(``python -m api.officer.admin create-admin``). The demo password is public (README), so
these accounts must never exist on a real deployment: they are flagged ``demo``.
"""

from __future__ import annotations

from api.officer.accounts import AccountStore, Role
from lpt.logs import get_logger

log = get_logger(__name__)

DEMO_PASSWORD = "demo-password"
HULL = "E06000010"
EAST_RIDING = "E06000011"
NE_LINCS = "E06000012"
N_LINCS = "E06000013"
#: Two Hull wards (Code-Point Open 2014 codes): the city centre and its neighbour.
HULL_CENTRE_WARDS = ("E05001677", "E05001671")

#: (username, display name, role, team, wards, local authorities)
DEMO_ACCOUNTS: tuple[tuple[str, str, Role, str | None, tuple[str, ...], tuple[str, ...]], ...] = (
    ("officer.hull", "PC Demo (Hull centre)", "officer", "Hull Central NPT", HULL_CENTRE_WARDS, ()),
    ("officer.east", "PC Demo (East Riding)", "officer", "East Riding NPT", (), (EAST_RIDING,)),
    ("supervisor.hull", "Sgt Demo (Hull)", "supervisor", "Hull Central NPT", (), (HULL,)),
    ("analyst.force", "Analyst Demo", "analyst", None, (), (HULL, EAST_RIDING, NE_LINCS, N_LINCS)),
    ("admin", "Admin Demo", "admin", None, (), ()),
)


#: Fictional key contacts (example.org addresses, Ofcom drama numbers) so the contacts page
#: has something to show: one in the Hull centre ward, one in the East Riding.
DEMO_CONTACTS = (
    ("kc-demo-hull", "key_contact", "Sam Example", "Old Town Residents' Association",
     "sam@example.org", "07700 900101", "E05001677", HULL),
    ("kc-demo-east", "advisory_group", "Alex Sample", "Independent Advisory Group",
     "alex@example.org", "07700 900102", "E05001701", EAST_RIDING),
)  # fmt: skip


async def seed_demo_contacts(accounts: AccountStore) -> None:
    for contact_id, kind, name, org, email, phone, ward, la in DEMO_CONTACTS:
        await accounts.pool.execute(
            """INSERT INTO identity_contacts (contact_id, kind, name, organisation, email, phone,
                   ward_code, local_authority_code, consent_given_at, consent_note, created_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), 'demo data (fictional person)',
                       'demo')
               ON CONFLICT (contact_id) DO NOTHING""",
            contact_id,
            kind,
            name,
            org,
            email,
            phone,
            ward,
            la,
        )


async def seed_demo_accounts(accounts: AccountStore) -> int:
    created = 0
    for username, name, role, team, wards, las in DEMO_ACCOUNTS:
        existing, _ = await accounts.credentials(username)
        if existing is not None:
            continue
        await accounts.pool.execute(
            "DELETE FROM officer_accounts WHERE lower(username) = lower($1) AND demo",
            username,
        )
        await accounts.create(
            username,
            name,
            role,
            password=DEMO_PASSWORD,
            team=team,
            ward_codes=wards,
            local_authority_codes=las,
            demo=True,
        )
        created += 1
    await seed_demo_contacts(accounts)
    if created:
        log.warning(
            "officer.demo_accounts_seeded", count=created, hint="LPT_DEMO=1: local use only"
        )
    return created
