"""MLflow pyfunc flavour of the detector: the saved detector folder plus this thin wrapper.

Loading through ``mlflow.pyfunc.load_model`` and through :func:`load_detector_folder` runs the
same code, and neither traces shapes, so any input size works.  Imported only inside
functions (it imports mlflow at module level).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

DETECTOR_ARTIFACT = "detector"


class DetectorPyfunc(mlflow.pyfunc.PythonModel):
    """``predict``: N x H x W x 3 uint8 RGB array (any H, W) -> N x H x W float32 probabilities."""

    def load_context(self, context: Any) -> None:
        from clearmark.model.detector import load_detector_folder

        self.detector = load_detector_folder(context.artifacts[DETECTOR_ARTIFACT])

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import numpy as np

        return self.detector.predict_proba(np.asarray(model_input, dtype=np.uint8))


def signature() -> Any:
    """Tensor signature with free batch, height and width."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1))]),
    )
