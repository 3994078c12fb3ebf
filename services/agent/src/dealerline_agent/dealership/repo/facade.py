"""The one repository object the agent's tools and service share, composed of the parts.

Each part owns one area of the dealership database; :class:`Dealership` builds them
around one :class:`~.store.Store` and offers their operations as its own, so a caller
needs one object (``repo.book(...)``, ``repo.customer_by_phone(...)``) while the code
lives with its area.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .appointments import Appointments
from .callbacks import Callbacks
from .catalog import Catalog
from .customers import Customers
from .faq_and_staff import FaqAndStaff
from .hours import Calendar
from .scheduling import Scheduling
from .store import Store, utc_now
from .vehicles import Vehicles

__all__ = ["Dealership"]


class Dealership:
    """The dealership database, as the agent's tools use it."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = utc_now,
        *,
        slot_minutes: int = 30,
        min_notice: timedelta = timedelta(hours=1),
        default_timezone: str = "America/Los_Angeles",
        default_name: str = "the dealership",
    ) -> None:
        self.store = Store(session_factory, clock)
        # The defaults hold only while the database has no dealership profile.
        self.calendar = Calendar(self.store, default_timezone, default_name)
        self.catalog = Catalog(self.store)
        self.customers = Customers(self.store)
        self.vehicles = Vehicles(self.store)
        self.scheduling = Scheduling(
            self.store,
            self.calendar,
            self.catalog,
            slot_minutes=slot_minutes,
            min_notice=min_notice,
        )
        self.appointments = Appointments(self.store, self.calendar, self.catalog, self.scheduling)
        self.faq_and_staff = FaqAndStaff(self.store)
        self.callbacks = Callbacks(self.store)
        self._offer_operations()

    def _offer_operations(self) -> None:
        """The parts' operations, offered as this object's own."""
        self.now = self.store.now
        self.close = self.store.close

        self.profile = self.calendar.profile
        self.timezone = self.calendar.timezone
        self.today = self.calendar.today
        self.weekly_hours = self.calendar.weekly_hours
        self.hours_on = self.calendar.hours_on
        self.holidays = self.calendar.holidays

        self.services = self.catalog.services
        self.find_service = self.catalog.find_service

        self.customer = self.customers.customer
        self.customer_by_phone = self.customers.customer_by_phone
        self.find_customers_by_name = self.customers.find_customers_by_name
        self.create_customer = self.customers.create_customer
        self.update_customer = self.customers.update_customer
        self.add_or_update_vehicle = self.vehicles.add_or_update_vehicle

        self.availability = self.scheduling.availability
        self.is_available = self.scheduling.is_available
        self.unavailable_reason = self.scheduling.unavailable_reason
        self.alternatives = self.scheduling.alternatives
        self.next_available = self.scheduling.next_available

        self.book = self.appointments.book
        self.upcoming_appointments = self.appointments.upcoming_appointments
        self.appointment = self.appointments.appointment
        self.reschedule = self.appointments.reschedule
        self.cancel = self.appointments.cancel

        self.search_faq = self.faq_and_staff.search_faq
        self.on_duty_staff = self.faq_and_staff.on_duty_staff

        self.request_callback = self.callbacks.request_callback
