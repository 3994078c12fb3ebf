"""Customer records: finding the caller (by id, phone or name), creating and updating
them."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from dealerline_common.db.models import Customer, Vehicle
from dealerline_common.db.phone import InvalidPhone, normalize_phone
from dealerline_common.logs import get_logger
from dealerline_common.state import CustomerInfo, VehicleInfo

from .cleaning import clean_email, clean_name, clean_phone
from .errors import Conflict, InvalidInput, NotFound
from .store import Store

__all__ = ["Customers", "customer_info", "customer_row", "vehicle_info"]

log = get_logger(__name__)


class Customers:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def customer(self, customer_id: int) -> CustomerInfo:
        async with self.store.reading() as session:
            row = await customer_row(session, customer_id)
            return customer_info(row, returning=True)

    async def customer_by_phone(self, phone: str) -> CustomerInfo | None:
        """The customer with this number (any format; it is normalised first)."""
        try:
            normalized = normalize_phone(phone)
        except InvalidPhone as exc:
            raise InvalidInput(f"that phone number is not valid ({exc})") from None
        async with self.store.reading() as session:
            row = (
                await session.execute(
                    select(Customer)
                    .where(Customer.phone == normalized)
                    .options(selectinload(Customer.vehicles))
                )
            ).scalar()
            return None if row is None else customer_info(row, returning=True)

    async def find_customers_by_name(self, name: str, limit: int = 5) -> list[CustomerInfo]:
        """Customers whose name contains ``name`` (any case; spaces collapsed)."""
        wanted = " ".join((name or "").split()).lower()
        if len(wanted) < 2:
            raise InvalidInput("give at least two letters of the name")
        async with self.store.reading() as session:
            rows = (
                await session.execute(
                    select(Customer)
                    .where(func.lower(Customer.name).contains(wanted, autoescape=True))
                    .options(selectinload(Customer.vehicles))
                    .order_by(Customer.name, Customer.id)
                    .limit(limit)
                )
            ).scalars()
            return [customer_info(r, returning=True) for r in rows]

    async def create_customer(
        self, name: str, phone: str | None = None, email: str | None = None
    ) -> CustomerInfo:
        new_name = clean_name(name)
        new_phone = clean_phone(phone)
        new_email = clean_email(email)
        try:
            async with self.store.writing() as session:
                if new_phone and await _phone_taken(session, new_phone):
                    raise Conflict("a customer with this phone number is already on file")
                row = Customer(name=new_name, phone=new_phone, email=new_email)
                session.add(row)
                await session.flush()
                info = customer_info(row, returning=False, vehicles=[])
        except IntegrityError:
            raise Conflict("a customer with this phone number is already on file") from None
        log.info("customer created", customer_id=info.id)
        return info

    async def update_customer(
        self,
        customer_id: int,
        *,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> CustomerInfo:
        """Change the given fields (None: leave as is)."""
        try:
            async with self.store.writing() as session:
                row = await customer_row(session, customer_id)
                if name is not None:
                    row.name = clean_name(name)
                if phone is not None:
                    new_phone = clean_phone(phone)
                    if new_phone != row.phone:
                        if new_phone and await _phone_taken(session, new_phone):
                            raise Conflict("another customer already has this phone number")
                        row.phone = new_phone
                if email is not None:
                    row.email = clean_email(email)
                await session.flush()
                info = customer_info(row, returning=True)
        except IntegrityError:
            raise Conflict("another customer already has this phone number") from None
        return info


async def customer_row(session: AsyncSession, customer_id: int) -> Customer:
    """The customer row with its vehicles loaded, or NotFound."""
    row = (
        await session.execute(
            select(Customer)
            .where(Customer.id == customer_id)
            .options(selectinload(Customer.vehicles))
        )
    ).scalar()
    if row is None:
        raise NotFound(f"no customer with id {customer_id}")
    return row


async def _phone_taken(session: AsyncSession, phone: str) -> bool:
    found = await session.execute(select(Customer.id).where(Customer.phone == phone))
    return found.scalar() is not None


def vehicle_info(row: Vehicle) -> VehicleInfo:
    return VehicleInfo(
        id=row.id,
        make=row.make,
        model=row.model,
        year=row.year,
        vin=row.vin,
        plate=row.plate,
        mileage=row.mileage,
    )


def customer_info(
    row: Customer, *, returning: bool, vehicles: list[Vehicle] | None = None
) -> CustomerInfo:
    """``returning``: the customer was on file before this call."""
    return CustomerInfo(
        id=row.id,
        name=row.name,
        phone=row.phone,
        email=row.email,
        returning=returning,
        vehicles=[vehicle_info(v) for v in (row.vehicles if vehicles is None else vehicles)],
    )
