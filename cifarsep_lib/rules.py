"""The assignment's rules that can be checked on a model, built or loaded:

* rule 1: fewer than 100,000 parameters;
* rule 3: no ``Conv2D`` layer anywhere (nested models and layers included): only
  spatially separable (k x 1 then 1 x k) and depthwise separable convolutions.

(Rule 2, beating the assignment's 84% bar, is a measurement: see ``evaluation``.)
"""

from __future__ import annotations

import dataclasses

import keras

MAX_PARAMS = 100_000


class RulesViolation(AssertionError):
    """A model breaks the assignment's rules."""


def iter_layers(model):
    """Every layer inside ``model``, depth first, descending into nested models and layers."""
    for layer in getattr(model, "layers", None) or getattr(model, "_layers", []):
        yield layer
        yield from iter_layers(layer)


# A stride-1 Conv2DTranspose is a full k x k convolution too, and in Keras 3 it is not a
# subclass of Conv2D, so it is named here; SeparableConv2D and DepthwiseConv2D are not
# subclasses of Conv2D either, and they are what the rules allow.
FULL_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)


def conv2d_layers(model) -> list[str]:
    """Names of the full 2-D convolutions (``Conv2D``, ``Conv2DTranspose``) inside ``model``."""
    return [layer.name for layer in iter_layers(model) if isinstance(layer, FULL_CONVOLUTIONS)]


@dataclasses.dataclass
class RulesReport:
    name: str
    params: int
    trainable: int
    non_trainable: int
    conv2d: list

    @property
    def passed(self) -> bool:
        return self.params < MAX_PARAMS and not self.conv2d

    def __str__(self) -> str:
        ok = lambda good: "PASS" if good else "FAIL"  # noqa: E731
        return "\n".join(
            [
                f"Rules check for {self.name}",
                f"  parameters    {self.params:>8,} (trainable {self.trainable:,}, "
                f"non-trainable {self.non_trainable:,})  < {MAX_PARAMS:,}: {ok(self.params < MAX_PARAMS)}",
                f"  Conv2D layers {len(self.conv2d):>8} {self.conv2d or ''}  == 0: {ok(not self.conv2d)}",
            ]
        )


def rules_report(model) -> RulesReport:
    """Count parameters and Conv2D layers of ``model``."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    non_trainable = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    return RulesReport(model.name, trainable + non_trainable, trainable, non_trainable, conv2d_layers(model))


def check_rules(model, allow_conv2d: bool = False, verbose: bool = True) -> RulesReport:
    """Print the rules report and raise ``RulesViolation`` if ``model`` breaks a rule.

    ``allow_conv2d=True`` is only for the historical base model, whose ``trans1`` is a Conv2D.
    """
    report = rules_report(model)
    if verbose:
        print(report)
    if report.params >= MAX_PARAMS:
        raise RulesViolation(f"{model.name} has {report.params:,} parameters; the limit is < {MAX_PARAMS:,}")
    if report.conv2d and not allow_conv2d:
        raise RulesViolation(
            f"{model.name} uses Conv2D layers {report.conv2d}; only separable convolutions are allowed"
        )
    return report
