"""The notification worker: audiences, the message budget, delivery and replies (issue 5).

One module per step, so each has one reason to change:

- :mod:`.audience` resolves who a request is for (areas, community groups, set-ups, ids);
- :mod:`.budget` decides, as pure functions of an injected clock, send / schedule / hold;
- :mod:`.tokens` makes reply tokens and unsubscribe links;
- :mod:`.compose` turns a request into e-mails, SMS and push texts;
- :mod:`.channels` delivers them (SMTP, HTTP providers) with retries;
- :mod:`.outbox` is the database side: outbox rows, budget charges, held messages;
- :mod:`.dispatch` runs one request end to end; :mod:`.digest` the held messages;
- :mod:`.replies` records residents' replies in their area's inbox;
- :mod:`.worker` consumes Kafka and publishes delivery statuses.
"""
