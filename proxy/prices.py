"""Prices per model in the account's credits, from PRICES_FILE (TOML), and what one call costs.

```toml
[models."gpt-4o-mini"]
prompt_per_million = 150          # credits per million prompt tokens
completion_per_million = 600      # credits per million completion tokens
[models."dall-e-*"]
per_image = 40
[models."whisper-*"]
per_audio_second = 1
[models."tts-*"]
per_call = 5
```

A model's price is the table whose name equals the model, else the first (in file order) whose
fnmatch pattern matches it. A call of a model with no price (or any call without PRICES_FILE)
costs its method's flat price (METHOD_PRICES / DEFAULT_METHOD_PRICE). A priced call costs the
sum of its parts, rounded up to a whole credit once per call. Pure: no Flask, no database.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from fractions import Fraction

_FIELDS = (
    "prompt_per_million",
    "completion_per_million",
    "per_call",
    "per_image",
    "per_audio_second",
)
# Seconds of audio a transcription or translation reserves credits for (its length is known
# only once the upstream reports it).
RESERVED_AUDIO_SECONDS = 600


@dataclass(frozen=True)
class ModelPrice:
    pattern: str
    prompt_per_million: Fraction = Fraction(0)
    completion_per_million: Fraction = Fraction(0)
    per_call: Fraction = Fraction(0)
    per_image: Fraction = Fraction(0)
    per_audio_second: Fraction = Fraction(0)

    def cost(
        self,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        images: int = 0,
        audio_seconds: float = 0,
    ) -> int:
        """Whole credits, rounded up once: the sum of the call's priced parts."""
        exact = (
            self.per_call
            + (prompt_tokens * self.prompt_per_million) / 1_000_000
            + (completion_tokens * self.completion_per_million) / 1_000_000
            + images * self.per_image
            + Fraction(math.ceil(audio_seconds)) * self.per_audio_second
        )
        return math.ceil(exact)


@dataclass(frozen=True)
class CallPrice:
    """What one call may cost (`most`, reserved at admission) and how its final cost is read
    from the usage the upstream reported. `model_price` None: a flat price, `most` exactly."""

    most: int
    model_price: ModelPrice | None = None
    images: int = 0

    def final(self, usage: Mapping) -> int:
        """The call's cost from its reported usage, never more than was reserved."""
        if self.model_price is None:
            return self.most
        cost = self.model_price.cost(
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            images=self.images,
            audio_seconds=_count(usage.get("seconds")),
        )
        return min(cost, self.most)


class PriceTable:
    def __init__(self, prices: list[ModelPrice]):
        self._exact = {price.pattern: price for price in reversed(prices)}
        self._patterns = prices

    @classmethod
    def load(cls, path: str) -> PriceTable:
        """The prices in the TOML file at `path` ("" : none); ValueError saying what to fix."""
        if not path:
            return cls([])
        try:
            with open(path, "rb") as prices_file:
                document = tomllib.load(prices_file)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"PRICES_FILE {path}: {error}") from None
        models = document.get("models", {})
        unknown = sorted(set(document) - {"models"})
        if unknown or not isinstance(models, dict):
            raise ValueError(f'PRICES_FILE {path}: only [models."NAME"] tables are read')
        return cls([_model_price(path, name, table) for name, table in models.items()])

    def for_model(self, model: object) -> ModelPrice | None:
        if not isinstance(model, str):
            return None
        exact = self._exact.get(model)
        if exact is not None:
            return exact
        return next((p for p in self._patterns if fnmatchcase(model, p.pattern)), None)

    def call_price(
        self, flat: int, args: Mapping, prompt_tokens: int, completion_tokens: int
    ) -> CallPrice:
        """The price of a call of `args` whose estimate is (prompt, most completion) tokens;
        the flat price when its model has none."""
        price = self.for_model(args.get("model"))
        if price is None:
            return CallPrice(most=flat)
        images = (_count(args.get("n")) or 1) if price.per_image else 0
        audio = RESERVED_AUDIO_SECONDS if price.per_audio_second else 0
        most = price.cost(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            images=images,
            audio_seconds=audio,
        )
        return CallPrice(most=most, model_price=price, images=images)


def _model_price(path: str, name: str, table) -> ModelPrice:
    if not isinstance(table, dict):
        raise ValueError(f'PRICES_FILE {path}: [models."{name}"] must be a table')
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f'PRICES_FILE {path}: [models."{name}"] has {", ".join(unknown)}; '
            f"known fields: {', '.join(_FIELDS)}"
        )
    values = {}
    for field, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f'PRICES_FILE {path}: [models."{name}"] {field} must be a number >= 0')
        values[field] = Fraction(str(value))
    return ModelPrice(pattern=name, **values)


def _count(value) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return 0
    return value
