"""The admin area's workshop (managers only): the service bays, and the services with
their prices, durations and the bays they can be done in. A bay or service that
appointments name is never deleted (409: the history would lose it); a service is
deactivated instead (``active: false``), which stops callers booking it."""

from typing import Any

from fastapi import APIRouter, Response

from dealerline_common.db.models import ServiceBay, ServiceType

from ..admin_schemas import BayIn, BayOut, BayPatch, ServiceIn, ServiceOut, ServicePatch
from ..admin_store import BAYS
from .admin import ERRORS, no_content
from .deps import Dash, Manager

router = APIRouter(prefix="/api/admin", tags=["admin"], responses=ERRORS)


def bay_json(row: ServiceBay, services: list[ServiceType]) -> dict[str, Any]:
    names = [s.name for s in services if any(b.id == row.id for b in s.bays)]
    return {"id": row.id, "name": row.name, "capacity": row.capacity, "services": names}


def service_json(row: ServiceType) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "duration_minutes": row.duration_minutes,
        "price_min_cents": row.price_min_cents,
        "price_max_cents": row.price_max_cents,
        "active": row.active,
        "bay_ids": [b.id for b in row.bays],
    }


# ---------------------------------------------------------------------- bays


@router.get("/bays", response_model=list[BayOut])
async def get_bays(who: Manager, dash: Dash) -> Any:
    services = await dash.admin.services()
    return [bay_json(r, services) for r in await dash.admin.rows(BAYS)]


@router.post("/bays", response_model=BayOut, status_code=201)
async def post_bay(body: BayIn, who: Manager, dash: Dash) -> Any:
    return bay_json(await dash.admin.create(BAYS, body.model_dump(), who.staff.id), [])


@router.patch("/bays/{bay_id}", response_model=BayOut)
async def patch_bay(bay_id: int, body: BayPatch, who: Manager, dash: Dash) -> Any:
    values = body.model_dump(exclude_unset=True)
    row, _ = await dash.admin.update(BAYS, bay_id, values, who.staff.id, must=("name", "capacity"))
    return bay_json(row, await dash.admin.services())


@router.delete("/bays/{bay_id}", status_code=204)
async def delete_bay(bay_id: int, who: Manager, dash: Dash) -> Response:
    """Delete a bay no appointment names and no active service needs alone."""
    await dash.admin.delete_bay(bay_id, who.staff.id)
    return no_content()


# ---------------------------------------------------------------------- services


@router.get("/services", response_model=list[ServiceOut])
async def get_services(who: Manager, dash: Dash) -> Any:
    """Every service (inactive ones too), by name; prices in cents."""
    return [service_json(r) for r in await dash.admin.services()]


@router.post("/services", response_model=ServiceOut, status_code=201)
async def post_service(body: ServiceIn, who: Manager, dash: Dash) -> Any:
    return service_json(await dash.admin.save_service(None, body.model_dump(), who.staff.id))


@router.patch("/services/{service_id}", response_model=ServiceOut)
async def patch_service(service_id: int, body: ServicePatch, who: Manager, dash: Dash) -> Any:
    values = body.model_dump(exclude_unset=True)
    return service_json(await dash.admin.save_service(service_id, values, who.staff.id))


@router.delete("/services/{service_id}", status_code=204)
async def delete_service(service_id: int, who: Manager, dash: Dash) -> Response:
    """Delete a service no appointment names (else 409: deactivate it)."""
    await dash.admin.delete_service(service_id, who.staff.id)
    return no_content()
