"""The plugin's own tests: adam-backends' test kit, one line each."""
from harness.testing import assert_agrees_with_reference, assert_refuses_bad_input


def test_agrees_with_the_float64_reference():
    assert_agrees_with_reference("template")


def test_refuses_bad_input():
    assert_refuses_bad_input("template")
