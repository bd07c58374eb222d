"""The OrderAggregate example the event-sourcing tests share (the docs page has its twin)."""

from __future__ import annotations

import attrs

from meshkit.eventsourcing import Aggregate, EventRegistry, applies

events = EventRegistry()


@events.register("OrderCreated")
@attrs.frozen
class OrderCreated:
    customer: str


@events.register("ItemAdded", version=2)
@attrs.frozen
class ItemAdded:
    sku: str
    quantity: int
    unit_price: int


@events.register("ItemRemoved")
@attrs.frozen
class ItemRemoved:
    sku: str


@events.register("OrderConfirmed")
@attrs.frozen
class OrderConfirmed:
    pass


@events.register("OrderCancelled")
@attrs.frozen
class OrderCancelled:
    reason: str


@events.upcaster("ItemAdded", from_version=1)
def _item_added_v1_to_v2(data: dict[str, object]) -> dict[str, object]:
    """Version 1 had no price: old items were free samples."""
    return {**data, "unit_price": 0}


class OrderError(Exception):
    """A command is not allowed in the order's current state."""


class OrderAggregate(Aggregate):
    """An order: created, items added or removed while open, then confirmed or cancelled."""

    type_name = "Order"

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.customer = ""
        self.status = "new"
        self.lines: dict[str, int] = {}
        self.total = 0

    @classmethod
    def create(cls, order_id: str, customer: str) -> OrderAggregate:
        """Start a new order."""
        order = cls(order_id)
        order.record(OrderCreated(customer=customer))
        return order

    def add_item(self, sku: str, quantity: int, unit_price: int) -> None:
        """Add `quantity` of `sku` at `unit_price` cents each."""
        self._require_open()
        if quantity < 1:
            raise OrderError(f"quantity must be >= 1, got {quantity}")
        self.record(ItemAdded(sku=sku, quantity=quantity, unit_price=unit_price))

    def remove_item(self, sku: str) -> None:
        """Remove every unit of `sku`."""
        self._require_open()
        if sku not in self.lines:
            raise OrderError(f"{sku} is not in the order")
        self.record(ItemRemoved(sku=sku))

    def confirm(self) -> None:
        """Confirm a non-empty open order."""
        self._require_open()
        if not self.lines:
            raise OrderError("cannot confirm an empty order")
        self.record(OrderConfirmed())

    def cancel(self, reason: str) -> None:
        """Cancel an order that is not cancelled yet."""
        if self.status == "cancelled":
            raise OrderError("already cancelled")
        self.record(OrderCancelled(reason=reason))

    def _require_open(self) -> None:
        if self.status != "open":
            raise OrderError(f"order is {self.status}")

    @applies(OrderCreated)
    def _created(self, event: OrderCreated) -> None:
        self.customer = event.customer
        self.status = "open"

    @applies(ItemAdded)
    def _item_added(self, event: ItemAdded) -> None:
        self.lines[event.sku] = self.lines.get(event.sku, 0) + event.quantity
        self.total += event.quantity * event.unit_price

    @applies(ItemRemoved)
    def _item_removed(self, event: ItemRemoved) -> None:
        del self.lines[event.sku]

    @applies(OrderConfirmed)
    def _confirmed(self, _event: OrderConfirmed) -> None:
        self.status = "confirmed"

    @applies(OrderCancelled)
    def _cancelled(self, _event: OrderCancelled) -> None:
        self.status = "cancelled"
