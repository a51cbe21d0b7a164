"""The event core: EventManager, Event, Subscriber and the callback options, exactly as DESIGN.md pins them."""

from __future__ import annotations

import pytest

from byop_nb.events import Event, EventManager, Subscriber

# Module-level lambdas: their qualname is "<lambda>" with no "<locals>", as in a notebook cell.
SEEN_A: list[int] = []
SEEN_B: list[int] = []
LAMBDA_A = lambda x: SEEN_A.append(x)  # noqa: E731
LAMBDA_B = lambda x: SEEN_B.append(x)  # noqa: E731


# -- on / emit / counts ------------------------------------------------------
def test_emit_calls_every_callback_with_the_arguments_in_registration_order() -> None:
    manager = EventManager(name="manager-name")
    calls: list[tuple[str, tuple, dict]] = []

    def f(a: int, b: str, c: float) -> None:
        calls.append(("f", (a, b, c), {}))

    def g(a: int, b: str, c: float) -> None:
        calls.append(("g", (a, b, c), {}))

    def h(a: int, b: str, c: float = 0.0) -> None:
        calls.append(("h", (a, b, c), {}))

    assert manager.on("hello", f) is f
    manager.on("hello", g)
    manager.on("hello", h)
    manager.emit("hello", 10, "world", 3.14)
    assert calls == [("f", (10, "world", 3.14), {}), ("g", (10, "world", 3.14), {}), ("h", (10, "world", 3.14), {})]
    assert manager.callbacks("hello") == [f, g, h]


def test_emit_passes_keyword_arguments() -> None:
    manager = EventManager()
    got = []

    def cb(a: int, *, b: int) -> None:
        got.append((a, b))

    manager.on("e", cb)
    manager.emit("e", 1, b=2)
    assert got == [(1, 2)]


def test_counts_has_only_emitted_events_and_counts_emissions_without_callbacks() -> None:
    manager = EventManager()
    ev = Event("typed")
    manager.on("never", lambda: None)
    assert manager.counts == {}
    manager.emit("hello")
    manager.emit("hello")
    manager.emit(ev, 1)
    manager.emit(("tuple", 1))
    assert manager.counts == {"hello": 2, ev: 1, ("tuple", 1): 1}


def test_event_objects_hash_by_identity_and_validate_their_name() -> None:
    a, b = Event("same"), Event("same")
    assert a != b
    assert len({a: 1, b: 2}) == 2
    manager = EventManager()
    manager.emit(a)
    assert manager.counts == {a: 1}
    assert str(a) == "same" and repr(a) == "Event('same')"
    with pytest.raises(TypeError, match="''"):
        Event("")
    with pytest.raises(TypeError, match="42"):
        Event(42)  # type: ignore[arg-type]


def test_zero_parameter_callback_may_subscribe_to_any_event() -> None:
    manager = EventManager()
    calls = []

    def no_params() -> None:
        calls.append("called")

    manager.on("with-args", no_params)
    manager.emit("with-args", 1, "two", three=3)
    assert calls == ["called"]


def test_mismatched_callback_raises_type_error_from_emit_with_a_note_naming_it() -> None:
    manager = EventManager(name="manager-name")
    event = Event("hello")
    called = []

    def f(a: int, b: str, c: float) -> None:
        called.append("f")

    def h(x: str) -> None:
        called.append("h")

    manager.on(event, f)
    manager.on(event, h)
    with pytest.raises(TypeError) as info:
        manager.emit(event, 10, "world", 3.14)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert ".h(x: " in notes and "callback" in notes, notes
    assert "10, 'world', 3.14" in notes
    assert called == ["f"]  # f ran first, h failed loudly


def test_mismatched_callback_with_options_also_gets_the_note() -> None:
    manager = EventManager()

    def h(x: str) -> None:
        pass

    manager.on("e", h, limit=5)
    with pytest.raises(TypeError) as info:
        manager.emit("e", 1, 2)
    assert any(".h(x: " in note for note in info.value.__notes__)


def test_type_error_raised_inside_a_matching_callback_gets_no_mismatch_note() -> None:
    manager = EventManager()

    def cb(x: int) -> None:
        raise TypeError("inside the callback")

    manager.on("e", cb)
    with pytest.raises(TypeError, match="inside the callback") as info:
        manager.emit("e", 1)
    assert not getattr(info.value, "__notes__", None)


def test_callback_exception_propagates_and_stops_the_remaining_callbacks() -> None:
    manager = EventManager()
    calls = []

    def first() -> None:
        calls.append(1)
        raise KeyError("boom")

    manager.on("e", first)
    manager.on("e", lambda: calls.append(2))
    with pytest.raises(KeyError, match="boom"):
        manager.emit("e")
    assert calls == [1]
    assert manager.counts == {"e": 1}


# -- options -----------------------------------------------------------------
def test_every_calls_on_emissions_1_4_7() -> None:
    manager = EventManager()
    at: list[int] = []
    manager.on("e", lambda: at.append(manager.counts["e"]), every=3)
    for _ in range(9):
        manager.emit("e")
    assert at == [1, 4, 7]


def test_every_counts_from_subscription() -> None:
    manager = EventManager()
    manager.emit("e")
    manager.emit("e")
    at: list[int] = []
    manager.on("e", lambda: at.append(manager.counts["e"]), every=2)
    for _ in range(5):
        manager.emit("e")
    assert at == [3, 5, 7]


def test_when_is_checked_after_the_count_was_incremented() -> None:
    manager = EventManager()
    seen_by_when: list[int] = []
    at: list[int] = []

    def when() -> bool:
        seen_by_when.append(manager.counts["e"])
        return manager.counts["e"] % 2 == 0

    manager.on("e", lambda: at.append(manager.counts["e"]), when=when)
    for _ in range(5):
        manager.emit("e")
    assert seen_by_when == [1, 2, 3, 4, 5]
    assert at == [2, 4]


def test_limit_is_a_total_number_of_calls() -> None:
    manager = EventManager()
    calls = []
    manager.on("e", lambda x: calls.append(x), limit=2)
    for i in range(5):
        manager.emit("e", i)
    assert calls == [0, 1]
    assert manager.counts == {"e": 5}


def test_repeat_calls_n_times_per_emission() -> None:
    manager = EventManager()
    calls = []
    manager.on("e", lambda x: calls.append(x), repeat=3)
    manager.emit("e", "a")
    manager.emit("e", "b")
    assert calls == ["a"] * 3 + ["b"] * 3


def test_limit_caps_repeat_across_emissions() -> None:
    manager = EventManager()
    calls = []
    manager.on("e", lambda x: calls.append(x), repeat=3, limit=4)
    manager.emit("e", "a")
    manager.emit("e", "b")
    manager.emit("e", "c")
    assert calls == ["a", "a", "a", "b"]


def test_every_when_and_limit_combine() -> None:
    manager = EventManager()
    at: list[int] = []
    manager.on(
        "e",
        lambda: at.append(manager.counts["e"]),
        every=2,
        when=lambda: manager.counts["e"] != 3,
        limit=3,
    )
    for _ in range(12):
        manager.emit("e")
    # every=2 -> 1, 3, 5, 7, 9, 11; when drops 3; limit keeps the first three.
    assert at == [1, 5, 7]


@pytest.mark.parametrize("option", ["limit", "repeat", "every"])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_options_raise_value_error_naming_the_value(option: str, value: int) -> None:
    manager = EventManager()
    with pytest.raises(ValueError, match=f"{option}=.*{value}"):
        manager.on("e", lambda: None, **{option: value})
    assert manager.callbacks("e") == []


@pytest.mark.parametrize("option", ["limit", "repeat", "every"])
@pytest.mark.parametrize("value", [1.5, "2", True])
def test_non_int_options_raise_type_error_naming_the_value(option: str, value: object) -> None:
    manager = EventManager()
    with pytest.raises(TypeError, match=f"{option}=.*{value!r}"):
        manager.on("e", lambda: None, **{option: value})


def test_bad_callback_when_and_name_raise_type_error_naming_the_value() -> None:
    manager = EventManager()
    with pytest.raises(TypeError, match="'not callable'"):
        manager.on("e", "not callable")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="when=.*True"):
        manager.on("e", lambda: None, when=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name=.*42"):
        manager.on("e", lambda: None, name=42)  # type: ignore[arg-type]
    assert manager.callbacks("e") == []


# -- re-registration ----------------------------------------------------------
CELL = """
def on_hello(x):
    calls.append(("{tag}", x))
"""


def test_re_registering_the_same_definition_replaces_it_in_place() -> None:
    manager = EventManager()
    calls: list[tuple[str, int]] = []
    namespace: dict = {"__name__": "notebook_cell", "calls": calls}

    def first(x: int) -> None:
        calls.append(("first", x))

    def last(x: int) -> None:
        calls.append(("last", x))

    manager.on("hello", first)
    exec(CELL.format(tag="old"), namespace)
    old = namespace["on_hello"]
    manager.on("hello", old)
    manager.on("hello", last)
    exec(CELL.format(tag="new"), namespace)  # the cell is re-run (and edited)
    new = namespace["on_hello"]
    assert new is not old
    manager.on("hello", new)
    manager.emit("hello", 1)
    assert calls == [("first", 1), ("new", 1), ("last", 1)]
    assert manager.callbacks("hello") == [first, new, last]


def test_re_running_an_identical_lambda_cell_replaces_it() -> None:
    manager = EventManager()
    calls: list[int] = []
    namespace: dict = {"__name__": "notebook_cell", "calls": calls, "manager": manager}
    for _ in range(3):
        exec("manager.on('e', lambda x: calls.append(x))", namespace)
    manager.emit("e", 7)
    assert calls == [7]


def test_two_different_lambdas_both_stay() -> None:
    SEEN_A.clear()
    SEEN_B.clear()
    manager = EventManager()
    manager.on("e", LAMBDA_A)
    manager.on("e", LAMBDA_B)
    manager.emit("e", 5)
    assert SEEN_A == [5] and SEEN_B == [5]
    assert manager.callbacks("e") == [LAMBDA_A, LAMBDA_B]


def test_lambdas_made_in_a_loop_inside_a_function_all_stay() -> None:
    manager = EventManager()
    calls: list[int] = []
    for i in range(3):
        manager.on("e", lambda i=i: calls.append(i))
    manager.emit("e")
    assert calls == [0, 1, 2]


def test_bound_methods_of_two_objects_both_stay_and_the_same_one_replaces() -> None:
    calls: list[str] = []

    class Listener:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def hear(self, x: int) -> None:
            calls.append(f"{self.tag}{x}")

    one, two = Listener("one"), Listener("two")
    manager = EventManager()
    manager.on("e", one.hear)
    manager.on("e", two.hear)
    manager.on("e", one.hear)  # the same bound method again: replaces
    manager.emit("e", 1)
    assert calls == ["one1", "two1"]


def test_registering_under_an_existing_name_replaces_that_registration() -> None:
    manager = EventManager()
    calls = []
    manager.on("e", lambda: calls.append("a"), name="cb")
    manager.on("e", lambda: calls.append("other"))
    manager.on("e", lambda: calls.append("b"), name="cb")
    manager.emit("e")
    assert calls == ["b", "other"]


# -- remove ------------------------------------------------------------------
def test_remove_by_name_from_one_event_or_all() -> None:
    manager = EventManager()
    calls = []

    def cb() -> None:
        calls.append("cb")

    manager.on("a", cb)
    manager.on("b", cb)
    manager.on("a", lambda: calls.append("named"), name="named")
    assert manager.remove("named", "a") is True
    assert manager.remove("named", "a") is False
    manager.emit("a")
    assert calls == ["cb"]
    # default name is the qualified name; without an event it removes from all events
    assert manager.remove(cb.__qualname__) is True
    manager.emit("a")
    manager.emit("b")
    assert calls == ["cb"]
    assert manager.remove("missing") is False


def test_removal_during_emission_does_not_break_the_emission() -> None:
    manager = EventManager()
    calls = []

    def once() -> None:
        calls.append("once")
        manager.remove("once", "e")

    manager.on("e", once, name="once")
    manager.on("e", lambda: calls.append("after"))
    manager.emit("e")
    manager.emit("e")
    assert calls == ["once", "after", "after"]


def test_remove_callback_removes_the_object() -> None:
    manager = EventManager()
    calls = []

    def cb(x: int) -> None:
        calls.append(x)

    manager.on("e", cb)
    assert manager.remove_callback(cb) is True
    manager.emit("e", 1)
    assert calls == []


# -- forward -----------------------------------------------------------------
def test_forward_emits_the_target_with_the_same_arguments() -> None:
    manager = EventManager()
    got = []
    manager.forward("src", "dst")
    manager.on("dst", lambda *a, **k: got.append((a, k)))
    manager.emit("src", 1, 2, x=3)
    assert got == [((1, 2), {"x": 3})]
    assert manager.counts == {"src": 1, "dst": 1}
    manager.forward("src", "dst")  # forwarding twice does not double
    manager.emit("src")
    assert manager.counts == {"src": 2, "dst": 2}


# -- Subscriber ----------------------------------------------------------------
def test_subscriber_as_decorator_decorator_with_options_and_function() -> None:
    manager = EventManager(name="event_manager")
    user_joined: Event[str] = Event("user-joined")
    on_user_joined = manager.subscriber(user_joined)
    assert isinstance(on_user_joined, Subscriber)
    calls = []

    @on_user_joined
    def plain(username: str) -> None:
        calls.append(("plain", username))

    @on_user_joined(limit=1, name="once")
    def once(username: str) -> None:
        calls.append(("once", username))

    def functional(username: str) -> None:
        calls.append(("functional", username))

    assert on_user_joined(functional) is functional
    assert plain.__name__ == "plain" and once.__name__ == "once"  # decorators return the function
    on_user_joined.emit("ann")
    on_user_joined.emit("bob")
    assert calls == [("plain", "ann"), ("once", "ann"), ("functional", "ann"), ("plain", "bob"), ("functional", "bob")]
    assert on_user_joined.count == 2
    assert manager.counts == {user_joined: 2}
    assert on_user_joined.remove(functional.__qualname__) is True
    on_user_joined.emit("cat")
    assert calls[-1] == ("plain", "cat")


def test_subscriber_decorator_options_are_validated_at_the_decorator_line() -> None:
    manager = EventManager()
    on_e = manager.subscriber(Event("e"))
    with pytest.raises(ValueError, match="every=.*0"):
        on_e(every=0)
    with pytest.raises(ValueError, match="repeat=.*-2"):
        on_e(repeat=-2)


def test_stacked_subscriber_decorators_register_one_zero_argument_function_on_both_events() -> None:
    manager = EventManager()
    a, b = Event("a"), Event("b")
    calls = []

    @manager.subscriber(a)(repeat=2)
    @manager.subscriber(b)
    def react() -> None:
        calls.append("react")

    manager.emit(a)
    manager.emit(b, "payload", 1)
    assert calls == ["react"] * 3
