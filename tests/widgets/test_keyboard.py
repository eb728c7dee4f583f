"""KeyboardShortcuts: keys from the browser (simulated messages) reach Python handlers, filtered."""
import pytest

from dcai_widgets.widgets.keyboard import KeyboardShortcuts


def test_captured_keys_reach_handlers_and_others_do_not():
    kb = KeyboardShortcuts(keys=["1", "Backspace"])
    got = []
    kb.on_key(got.append)
    kb._on_msg(kb, {"type": "keydown", "key": "1"}, [])       # what the ESM module sends
    kb._on_msg(kb, {"type": "keydown", "key": "q"}, [])       # not captured
    kb._on_msg(kb, {"type": "something-else", "key": "1"}, [])
    kb._on_msg(kb, "garbage", [])
    kb.press("Backspace")
    assert got == ["1", "Backspace"]


def test_disabled_listener_ignores_keys_and_handlers_can_be_removed():
    kb = KeyboardShortcuts()
    got = []
    kb.on_key(got.append)
    kb.enabled = False
    kb.press("a")
    kb.enabled = True
    kb.press("b")
    kb.on_key(got.append, remove=True)
    kb.press("c")
    assert got == ["b"]


def test_on_key_rejects_non_callables():
    with pytest.raises(TypeError, match="callable"):
        KeyboardShortcuts().on_key("not a function")


def test_esm_listens_on_the_document_once_per_model():
    esm = KeyboardShortcuts._esm
    assert 'document.addEventListener("keydown"' in esm and "__dcaiKeyboard.has(uid)" in esm
    assert "initialize" in esm and "model.send" in esm
    a, b = KeyboardShortcuts(), KeyboardShortcuts()
    assert a.uid and b.uid and a.uid != b.uid  # each listener is told apart in the page


def test_key_help_overlay_toggles_with_question_mark_and_closes_with_escape():
    from dcai_widgets.widgets.keyboard import KeyHelp

    kb = KeyboardShortcuts(keys=["1"])
    help_ = KeyHelp([("1", "label as <one>")], title="Label").attach(kb)
    assert "?" in kb.capture and "Escape" in kb.capture and not help_.visible
    kb.press("?")
    assert help_.visible and "&lt;one&gt;" in help_.table.value and "<kbd>?</kbd>" in help_.table.value
    kb.press("Escape")
    assert not help_.visible
    help_.button.click()
    assert help_.visible
    help_.set_keys([("Backspace", "undo")])
    assert "⌫ Backspace" in help_.table.value and "label as" not in help_.table.value


def test_a_listener_switched_on_takes_the_keyboard_in_the_page():
    assert 'model.on("change:enabled", onEnabled)' in KeyboardShortcuts._esm
    assert 'if (model.get("enabled")) activate(uid)' in KeyboardShortcuts._esm
