"""Amounts: what a person types is in token units (``"0.001"``, ``Decimal("1.5")``, ``2``);
what the node's API and this SDK's results carry is integer base units (the node's strings,
``10**decimals`` per token). Wrap a number in :class:`BaseUnits` to pass base units as they are."""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Union

DEFAULT_DECIMALS = 18
DEFAULT_SYMBOL = "VRN"

_CTX = decimal.Context(prec=200, rounding=decimal.ROUND_DOWN, traps=[decimal.InvalidOperation])


class BaseUnits(int):
    """An amount already in base units: ``BaseUnits(1430)`` is 1430 base units, not 1430 tokens."""

    def __repr__(self) -> str:
        return f"BaseUnits({int(self)})"


Amount = Union[str, int, float, Decimal, BaseUnits]


def to_base_units(amount: Amount, decimals: int = DEFAULT_DECIMALS, symbol: str = DEFAULT_SYMBOL) -> int:
    """Token units to base units: ``to_base_units("0.001", 18) == 10**15``. A string may end with
    the token's symbol (``"1.5 VRN"``, as :func:`format_amount` writes it). Refuses negative
    amounts and more fractional digits than the token has (nothing is rounded away)."""
    if isinstance(amount, BaseUnits):
        if amount < 0:
            raise ValueError(f"negative amount {amount!r}")
        return int(amount)
    if isinstance(amount, bool):
        raise TypeError("an amount cannot be a bool")
    if isinstance(amount, Decimal):
        d = amount
    elif isinstance(amount, int):
        d = Decimal(amount)
    elif isinstance(amount, float):
        # repr is the shortest decimal that reads back as this float: what was typed.
        d = Decimal(repr(amount))
    elif isinstance(amount, str):
        s = amount.strip().replace("_", "")
        if symbol and s.upper().endswith(symbol.upper()):
            s = s[: -len(symbol)].strip()
        try:
            d = Decimal(s)
        except decimal.InvalidOperation:
            raise ValueError(f"{amount!r} is not an amount (e.g. \"0.001\")") from None
    else:
        raise TypeError(f"an amount must be a str, int, float, Decimal or BaseUnits, not {type(amount).__name__}")
    if not d.is_finite():
        raise ValueError(f"{amount!r} is not a finite amount")
    if d < 0:
        raise ValueError(f"negative amount {amount!r}")
    scaled = _CTX.scaleb(d, decimals)
    if scaled != _CTX.to_integral_value(scaled):
        raise ValueError(f"{amount!r} has more than {decimals} decimal places (the token's decimals)")
    return int(scaled)


def from_base_units(base: Union[int, str], decimals: int = DEFAULT_DECIMALS) -> Decimal:
    """Base units (an int or the API's decimal string) to token units, exactly."""
    n = int(base)
    return _CTX.scaleb(Decimal(n), -decimals)


def format_amount(base: Union[int, str], decimals: int = DEFAULT_DECIMALS, symbol: str = DEFAULT_SYMBOL) -> str:
    """``format_amount("1430000000000000", 18, "VRN") == "0.00143 VRN"``: every digit kept, no
    trailing zeros, no exponent."""
    d = from_base_units(base, decimals)
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} {symbol}" if symbol else text
