"""A store written before grants were kept per custodian and person (schema 4) is reshaped on
open and its access rows recomputed before the gateway serves: nobody loses access the rule
gives them, nobody gains any it does not."""
from __future__ import annotations

import sqlite3

from conftest import running_gateway, task
from test_access_redteam import KOMMUN, OTHER, REGION, build_world

SCHEMA_4 = """
CREATE TABLE res_access_old (rkey INTEGER PRIMARY KEY, author TEXT NOT NULL, patient TEXT NOT NULL);
INSERT INTO res_access_old SELECT rkey, author, patient FROM res_access;
DROP TABLE res_access;
ALTER TABLE res_access_old RENAME TO res_access;
DROP TABLE access_grants;
CREATE TABLE access_grants (org TEXT NOT NULL, patient TEXT NOT NULL, valid_from INTEGER NOT NULL,
    valid_to INTEGER NOT NULL, PRIMARY KEY (org, patient, valid_from)) WITHOUT ROWID;
DROP TABLE notice_access;
CREATE TABLE notice_access (org TEXT NOT NULL, rtype TEXT NOT NULL, rid TEXT NOT NULL,
    patient TEXT NOT NULL, PRIMARY KEY (org, rtype, rid)) WITHOUT ROWID;
DROP TABLE maintenance;
PRAGMA user_version = 4;
"""


async def test_a_schema_4_store_is_reshaped_and_its_grants_recomputed_at_start(settings):
    async with running_gateway(settings, authorised=False) as http:
        w = await build_world(http, settings.db_path)
        await w.share()
        own = await w.make(KOMMUN, task(f"Patient/{w.ids['pid']}", description="KOMMUN-NOTE"))
    with sqlite3.connect(settings.db_path) as db:  # as the previous release left it
        db.executescript(SCHEMA_4)
    async with running_gateway(settings, authorised=False) as http:
        w.http = http
        for org in (REGION, KOMMUN, OTHER):
            w.headers[org] = await w.login(org)
        assert (await w.get(KOMMUN, f"Task/{w.ids['task']}")).status_code == 200  # the grant is back
        assert (await w.get(KOMMUN, f"Task/{w.ids['task3']}")).status_code == 404  # the second person: none
        assert (await w.get(OTHER, f"Task/{w.ids['task']}")).status_code == 404
        assert (await w.get(REGION, f"Task/{own['id']}")).status_code == 404  # KOMMUN's data stays KOMMUN's
    with sqlite3.connect(settings.db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (5,)
        assert db.execute("SELECT COUNT(*) FROM maintenance").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM res_access WHERE patient != '' AND person = ''").fetchone() == (0,)
