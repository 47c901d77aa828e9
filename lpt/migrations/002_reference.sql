-- Reference data: postcodes, deprivation (IMD), wards, local authorities, Census populations.
-- Loaded by `lpt reference load` (reference/loaders.py) from the files in LPT_DATA_DIR; every
-- table is replaced as a whole on reload, so there are no foreign keys between them (a partial
-- file set must never block a reload) and codes are plain text.

-- One row per real postcode: NSPL (May 2025) for the point, Code-Point Open 2014 for the ward
-- and local authority. A postcode NSPL lists without coordinates is still real: it is kept with
-- unlocated = true (and no point or cell) so a registration on it is accepted and flagged.
CREATE TABLE ref_postcodes (
    postcode             text PRIMARY KEY,          -- normalised, 'HU1 1AA'
    lat                  double precision,
    lng                  double precision,
    cell                 text,                      -- H3 resolution 10 of (lat, lng)
    unlocated            boolean NOT NULL,
    ward_code            text,                      -- Code-Point Open 2014 (2014 wards)
    local_authority_code text,                      -- Code-Point Open 2014 (2014 districts)
    CHECK (unlocated = (lat IS NULL)),
    CHECK ((lat IS NULL) = (lng IS NULL) AND (lat IS NULL) = (cell IS NULL))
);
CREATE INDEX ref_postcodes_cell ON ref_postcodes (cell);
CREATE INDEX ref_postcodes_ward ON ref_postcodes (ward_code);
COMMENT ON COLUMN ref_postcodes.ward_code IS
    'Code-Point Open 2014 ward code; NULL for postcodes newer than 2014 or outside its extract';

-- IMD by LSOA in both vintages: 2011 LSOAs with IMD 2019 (ranks and deciles, no scores) and
-- 2021 LSOAs with IMD 2025 (scores too). Rank 1 = most deprived.
CREATE TABLE ref_lsoa_imd (
    lsoa_code            text NOT NULL,
    vintage              smallint NOT NULL CHECK (vintage IN (2011, 2021)),
    lsoa_name            text,
    local_authority_code text,
    imd_rank             integer NOT NULL,
    imd_decile           integer NOT NULL CHECK (imd_decile BETWEEN 1 AND 10),
    income_rank          integer NOT NULL,
    income_decile        integer NOT NULL CHECK (income_decile BETWEEN 1 AND 10),
    income_score         double precision,
    -- income_rank / LSOAs in England of that vintage (32,844 in 2011, 33,755 in 2021): raw ranks
    -- of the two vintages are not comparable, this fraction is (near 0 = most deprived).
    income_rank_fraction double precision NOT NULL,
    PRIMARY KEY (lsoa_code, vintage)
);
COMMENT ON COLUMN ref_lsoa_imd.lsoa_name IS
    '2011: from IMD 2019. 2021: from Census 2021 where the extract covers it (Humberside), else NULL';
COMMENT ON COLUMN ref_lsoa_imd.local_authority_code IS
    '2011: lad19 from IMD 2019. 2021: authority named by the Census LSOA name, else the 2019 '
    'authority of the same code when that authority still exists in 2024, else NULL';
COMMENT ON COLUMN ref_lsoa_imd.income_score IS 'IMD 2025 only (IMD 2019 file has no scores)';

-- Resolve an LSOA code of a given vintage to its IMD row. Fallback rule: the row of the
-- requested vintage when the code exists there; otherwise the same code in the other vintage
-- (most LSOA codes were unchanged between 2011 and 2021, so the same code is the same area,
-- only assessed by the other IMD edition); otherwise no row. `fallback` says which happened.
-- Compare across vintages with deciles or income_rank_fraction, never raw ranks.
CREATE FUNCTION ref_imd(p_code text, p_vintage integer)
RETURNS TABLE (
    lsoa_code            text,
    requested_vintage    smallint,
    vintage              smallint,
    fallback             boolean,
    lsoa_name            text,
    local_authority_code text,
    imd_rank             integer,
    imd_decile           integer,
    income_rank          integer,
    income_decile        integer,
    income_score         double precision,
    income_rank_fraction double precision
)
LANGUAGE sql STABLE
AS $$
    SELECT i.lsoa_code, p_vintage::smallint, i.vintage, i.vintage <> p_vintage, i.lsoa_name,
           i.local_authority_code, i.imd_rank, i.imd_decile, i.income_rank, i.income_decile,
           i.income_score, i.income_rank_fraction
    FROM ref_lsoa_imd i
    WHERE i.lsoa_code = p_code
    ORDER BY (i.vintage = p_vintage) DESC
    LIMIT 1
$$;

-- Local authorities: every lower-tier authority of 2024 (IMD 2025 summary, with its Income
-- domain summary) plus the 2019 districts the IMD 2019 file names that no longer exist (e.g.
-- the North Yorkshire districts Code-Point 2014 still uses), so every code has a name.
CREATE TABLE ref_local_authorities (
    code                         text PRIMARY KEY,
    name                         text NOT NULL,
    current                      boolean NOT NULL,  -- exists in the 2024 list
    imd_rank_of_average_score    integer,           -- 1 = most deprived authority
    income_average_score         double precision,
    income_rank_of_average_score integer,
    income_share_most_deprived_10pct double precision  -- share of its LSOAs in England's 10%
);

-- Wards as Code-Point Open 2014 gives them (2014 codes). Ward names are not in the data, so
-- only codes; the point is the mean of its located postcodes, a label position, not a boundary.
CREATE TABLE ref_wards (
    ward_code            text PRIMARY KEY,
    local_authority_code text,
    postcodes            integer NOT NULL,
    located_postcodes    integer NOT NULL,
    lat                  double precision,
    lng                  double precision
);

-- Census 2021 usual residents by six age bands per 2021 LSOA (age_band = schemas AgeBand).
CREATE TABLE ref_census_age (
    lsoa21_code text NOT NULL,
    lsoa21_name text NOT NULL,
    age_band    text NOT NULL,
    residents   integer NOT NULL CHECK (residents >= 0),
    PRIMARY KEY (lsoa21_code, age_band)
);

-- Census 2021 TS021 high-level ethnic groups per 2021 MSOA (ethnic_group = schemas EthnicGroup),
-- England and Wales. Area-level representation figures only (DESIGN §6).
CREATE TABLE ref_census_ethnic (
    msoa21_code  text NOT NULL,
    msoa21_name  text NOT NULL,
    ethnic_group text NOT NULL,
    residents    integer NOT NULL CHECK (residents >= 0),
    PRIMARY KEY (msoa21_code, ethnic_group)
);

-- What was loaded, from which files (and their content hash, so an unchanged file set is not
-- reloaded), how many rows, when.
CREATE TABLE ref_loads (
    dataset       text PRIMARY KEY,
    source_file   text NOT NULL,
    rows          integer NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT now(),
    source_sha256 text
);
