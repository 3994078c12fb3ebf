"""VIN validation: structure, forbidden letters and the North American check digit."""

from __future__ import annotations

import pytest
import yaml

from dealerline_agent.dealership.vin import InvalidVin, check_digit, validate_vin
from dealerline_common.db.seed import DEMO_FILE


@pytest.mark.parametrize(
    "vin",
    ["1HGCM82633A004352", "1M8GDM9AXKP042788", "11111111111111111", "5YJ3E1EA6LF625904"],
)
def test_valid_vins(vin: str) -> None:
    assert validate_vin(vin) == vin


def test_spoken_vins_are_normalised() -> None:
    assert validate_vin(" 1hgcm-826 33a.004352 ") == "1HGCM82633A004352"


def test_check_digit_x() -> None:
    assert check_digit("1M8GDM9AXKP042788") == "X"


@pytest.mark.parametrize(
    ("vin", "reason"),
    [
        ("", "no VIN given"),
        ("1HGCM82633A00435", "has 16"),
        ("1HGCM82633A0043521", "has 18"),
        ("1HGCM82633AO04352", "never contains the letters I, O or Q (found O)"),
        ("IHGCM82633A004352", "(found I)"),
        ("1HGCM82633Q004352", "(found Q)"),
        ("1HGCM82633A00435*", "only letters and digits"),
        ("1HGCM82643A004352", "check digit (9th character) is 4 but should be 3"),
        ("1M8GDM9A1KP042788", "should be X"),
    ],
)
def test_invalid_vins_say_why(vin: str, reason: str) -> None:
    with pytest.raises(InvalidVin) as refused:
        validate_vin(vin)
    assert reason in str(refused.value)


def test_every_demo_vin_is_valid() -> None:
    data = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))
    vins = [v["vin"] for c in data["customers"] for v in c["vehicles"] if v.get("vin")]
    assert len(vins) >= 5
    for vin in vins:
        assert validate_vin(vin) == vin
