"""Eggs and installation: egg import (`eggs`) and variable rules (`rules`). Sans-I/O."""
from .eggs import (
    Egg,
    EggError,
    EggVariable,
    InstallScript,
    egg_to_definition,
    load_egg,
    parse_egg,
    stop_config,
    validate_environment,
)
from .rules import (
    MISSING,
    RuleFailure,
    ValidationResult,
    VariableValidationError,
    parse_rules,
    validate_value,
)

__all__ = [
    "Egg",
    "EggError",
    "EggVariable",
    "InstallScript",
    "MISSING",
    "RuleFailure",
    "ValidationResult",
    "VariableValidationError",
    "egg_to_definition",
    "load_egg",
    "parse_egg",
    "parse_rules",
    "stop_config",
    "validate_environment",
    "validate_value",
]
