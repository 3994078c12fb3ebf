"""A customer's vehicles: adding one, or completing one already on file instead of
adding a duplicate."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dealerline_common.db.models import Customer, Vehicle
from dealerline_common.logs import get_logger
from dealerline_common.state import VehicleInfo

from .cleaning import vehicle_fields
from .customers import customer_row, vehicle_info
from .errors import Conflict, InvalidInput, NotAllowed
from .store import Store

__all__ = ["Vehicles"]

log = get_logger(__name__)


class Vehicles:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add_or_update_vehicle(
        self,
        customer_id: int,
        *,
        make: str | None = None,
        model: str | None = None,
        year: int | None = None,
        vin: str | None = None,
        plate: str | None = None,
        mileage: int | None = None,
        vehicle_id: int | None = None,
    ) -> tuple[VehicleInfo, bool]:
        """Save a vehicle of the customer; returns it and whether it was created.

        Updates instead of adding a duplicate when ``vehicle_id`` names one of the
        customer's vehicles, when the VIN is already on one of them, or when one of them
        has the same make, model and year and no VIN yet (the caller is adding detail
        to a car already on file).
        """
        fields = vehicle_fields(make, model, year, vin, plate, mileage)
        try:
            async with self.store.writing() as session:
                customer = await customer_row(session, customer_id)
                target = await _matching_vehicle(session, customer, fields, vehicle_id)
                created = target is None
                if target is None:
                    if not fields.get("make") or not fields.get("model"):
                        raise InvalidInput("a new vehicle needs at least its make and model")
                    target = Vehicle(customer_id=customer.id)
                    session.add(target)
                for key, value in fields.items():
                    setattr(target, key, value)
                await session.flush()
                info = vehicle_info(target)
        except IntegrityError:
            raise Conflict("this VIN is already registered to another vehicle") from None
        log.info("vehicle saved", customer_id=customer_id, vehicle_id=info.id, created=created)
        return info, created


async def _matching_vehicle(
    session: AsyncSession,
    customer: Customer,
    fields: dict[str, object],
    vehicle_id: int | None,
) -> Vehicle | None:
    own = {v.id: v for v in customer.vehicles}
    if vehicle_id is not None:
        if vehicle_id not in own:
            raise NotAllowed(f"vehicle {vehicle_id} is not one of this customer's vehicles")
        target: Vehicle | None = own[vehicle_id]
    else:
        target = None
    vin = fields.get("vin")
    if vin:
        holder = (await session.execute(select(Vehicle).where(Vehicle.vin == vin))).scalar()
        if holder is not None and holder.customer_id != customer.id:
            raise Conflict("this VIN is registered to a different customer's vehicle")
        if holder is not None:
            if target is not None and holder.id != target.id:
                raise Conflict(f"this VIN is already on vehicle {holder.id}")
            return holder
    if target is not None:
        return target
    for v in customer.vehicles:
        same = (
            (v.make or "").lower() == str(fields.get("make") or "").lower()
            and (v.model or "").lower() == str(fields.get("model") or "").lower()
            and (fields.get("year") is None or v.year in (None, fields.get("year")))
        )
        if same and not v.vin:
            return v
    return None
