"""The invoice state machine: one transitions AsyncMachine per rules set, models transient.

Invoices live as rows in the store, not as resident objects: an invoice is on the machine
only while one event is handled (100k attached models cost over 1 GB and make add_model
quadratic), and `queued="model"` keeps a second event for the same invoice from
cancelling the first one's callbacks. The objects the machine moves are a small pool of
slots, each carrying one invoice for one event: `add_model` binds about forty methods,
which measured as half the cost of a move, so a slot is attached once and reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from transitions import MachineError
from transitions.extensions import GraphMachine
from transitions.extensions.asyncio import AsyncMachine

from syncd.rules.model import Rules


def trigger_name(dest: str) -> str:
    """Return the trigger that moves an invoice into `dest` (prefixed: no collisions)."""
    return f"to_{dest}"


class _Machine(AsyncMachine):
    """AsyncMachine that skips `asyncio.gather` when a stage has no callbacks.

    A move with no callbacks still passes through about eight callback stages, each a
    `gather()` of nothing; skipping those measured as a tenth of syncd's CPU per event.
    Stages that do have callbacks run exactly as in AsyncMachine.
    """

    def __getattr__(self, name: str) -> Any:
        # every move asks `hasattr(machine, "model_graphs")` (transitions' diagrams); the
        # miss went through Machine.__getattr__'s callback-name parsing and a formatted
        # error: a third of a move's CPU (py-spy, issue 25)
        if name == "model_graphs":
            raise AttributeError(name)
        return super().__getattr__(name)

    @staticmethod
    async def await_all(
        callables: list[Callable[..., Coroutine[Any, Any, bool | None]]],
    ) -> list[bool | None]:
        """Run the callables concurrently, as AsyncMachine does; nothing to do is free."""
        if not callables:
            return []
        return list(await asyncio.gather(*[func() for func in callables]))


class InvoiceModel:
    """What the machine moves: only the CRM status, for the length of one event."""

    state: str

    def __init__(self, invoice_id: str) -> None:
        self.invoice_id = invoice_id


class InvoiceMachine:
    """Decides every status move by the tenant's rules; does no I/O."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._machine = _Machine(
            model=None, queued="model", send_event=True, **_definition(rules)
        )
        self._free: list[InvoiceModel] = []

    async def move(self, invoice_id: str, current: str, dest: str) -> bool:
        """Move an invoice from `current` to `dest`; False when the rules refuse."""
        event = self._machine.events.get(trigger_name(dest))
        if event is None or current not in event.transitions:
            # refused without triggering: transitions logs every MachineError at ERROR
            return False
        model = self._slot(invoice_id, current)
        try:
            moved: bool = await event.trigger(model)
        except MachineError:
            moved = False
        finally:
            self._free.append(model)
        return moved and model.state == dest

    def _slot(self, invoice_id: str, current: str) -> InvoiceModel:
        """Return a free slot carrying `invoice_id` in state `current`."""
        if self._free:
            model = self._free.pop()
            self._machine.set_state(current, model=model)
        else:
            model = InvoiceModel(invoice_id)
            self._machine.add_model(model, initial=current)
        model.invoice_id = invoice_id
        return model

    @property
    def attached(self) -> int:
        """How many slot objects the machine holds (bounded by concurrent events)."""
        return len(self._machine.models)

    def can_start_in(self, status: str) -> bool:
        """Tell whether a first snapshot may arrive in `status`.

        syncd may first hear of an invoice after some moves (it was created before syncd
        ran, or its earlier snapshots were older), so any status reachable from the
        initial one is accepted as a start.
        """
        return status in self.rules.reachable()


def mermaid(rules: Rules) -> str:
    """Draw the rules' state machine as Mermaid stateDiagram-v2 text."""
    model = InvoiceModel("graph")
    GraphMachine(
        model=model, graph_engine="mermaid", title=rules.source, **_definition(rules)
    )
    graph: Any = model.get_graph()  # type: ignore[attr-defined]  # bound by GraphMachine
    return str(graph.draw(None))


def _definition(rules: Rules) -> dict[str, Any]:
    """The machine's states and moves, from the rules; no automatic `to_*` triggers."""
    return {
        "states": [{"name": s, "final": s in rules.final} for s in rules.statuses],
        "transitions": [
            {"trigger": trigger_name(dest), "source": source, "dest": dest}
            for source, dests in rules.moves.items()
            for dest in dests
        ],
        "initial": rules.initial,
        "auto_transitions": False,
    }
