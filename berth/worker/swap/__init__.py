"""Model swapping: models registered on the worker, started, woken, put to sleep and parked on
demand under an idle and budget policy (see docs/swapping.md)."""

from berth.worker.swap._controller import SwapController
from berth.worker.swap._definitions import DefinitionStore, ModelDefinition
from berth.worker.swap._engine import EngineControl, EngineError
from berth.worker.swap._errors import ModelStateConflict
from berth.worker.swap._registration import ModelRegistration
from berth.worker.swap._state import Activation
from berth.worker.swap._views import ActivationView, ModelList, ModelView

__all__ = [
    "Activation",
    "ActivationView",
    "DefinitionStore",
    "EngineControl",
    "EngineError",
    "ModelDefinition",
    "ModelList",
    "ModelRegistration",
    "ModelStateConflict",
    "ModelView",
    "SwapController",
]
