"""Payloads as OpenKAT sends them."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

_seq = itertools.count()


def boefje_data(
    boefje_id: str = "dns-records",
    *,
    ooi: str | None = None,
    organization: str = "org1",
    oci_image: str | None = None,
    deduplication_key: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "boefje": {"id": boefje_id, "name": boefje_id, "version": None, "oci_image": oci_image},
        "input_ooi": ooi if ooi is not None else f"Hostname|internet|h{next(_seq)}.example",
        "organization": organization,
    }
    if deduplication_key:
        data["deduplication_key"] = deduplication_key
    return data


def normalizer_data(normalizer_id: str = "kat_nmap_normalize", organization: str = "org1") -> dict[str, Any]:
    return {
        "normalizer": {"id": normalizer_id, "version": None},
        "raw_data": {
            "id": str(uuid.uuid4()),
            "boefje_meta": {
                "id": str(uuid.uuid4()),
                "boefje": {"id": "nmap", "version": None},
                "input_ooi": "IPAddressV4|internet|1.1.1.1",
                "arguments": {},
                "organization": organization,
                "started_at": None,
                "ended_at": None,
            },
            "mime_types": [{"value": "boefje/nmap"}],
        },
    }


def report_data(recipe: str | None = None, organisation: str = "org1") -> dict[str, Any]:
    return {"organisation_id": organisation, "report_recipe_id": recipe or f"recipe-{next(_seq)}"}
