"""The yardstick: a bare FastAPI app serving one fixed ~500-byte FHIR JSON body.

It runs under uvicorn exactly as ``gateway serve`` does (``uvicorn.run(app, host, port,
access_log=False)``, one process, uvicorn's default loop/HTTP picks, which are uvloop and
httptools when installed), so "gateway req/s ÷ bare req/s" isolates what the gateway itself
costs on top of the framework and the server: routing, negotiation, the store, headers.

    python bench/bare_app.py --port 8099     # GET /fhir/Patient/bare
"""
from __future__ import annotations

import argparse

import orjson
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

# A realistic, pre-serialised Patient (~500 bytes), like the canonical bytes the gateway stores.
BODY = orjson.dumps({
    "resourceType": "Patient", "id": "bare",
    "meta": {"versionId": "1", "lastUpdated": "2024-05-01T08:30:00.000Z"},
    "identifier": [{"system": "http://electronichealth.se/identifier/personnummer", "value": "194001019999"}],
    "active": True,
    "name": [{"use": "official", "family": "Andersson", "given": ["Anna", "Maria"]}],
    "telecom": [{"system": "phone", "value": "+46701234567", "use": "mobile"}],
    "gender": "female", "birthDate": "1940-01-01",
    "address": [{"line": ["Storgatan 1"], "city": "Exempelstad", "postalCode": "12345", "country": "SE"}],
    "managingOrganization": {"reference": "Organization/region-exempel", "display": "Region Exempel"},
})

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/fhir/Patient/bare")
async def read() -> Response:
    return Response(content=BODY, media_type="application/fhir+json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    # Same call as gateway/cli.py (minus its log level, which does not touch the request path).
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
