"""A predictor for MONAI's sliding_window_inference that runs the network with voxinfer.

    from monai.inferers import sliding_window_inference
    predictor = voxinfer.Predictor("unet.onnx", threads=4)
    logits = sliding_window_inference(image, roi_size=(96, 96, 96), sw_batch_size=1, predictor=predictor)

The MONAI script keeps its transforms, sliding window and postprocessing; only the network
changes. The predictor takes and returns torch tensors (on the input's device and dtype)
or NumPy arrays, so it works without torch as well.
"""

import os

import numpy as np

from ._voxinfer import InvalidInputError, Session


def _is_torch_tensor(x):
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _torch():
    import sys

    return sys.modules.get("torch")  # only used when the caller already has torch


class Predictor:
    """Callable network for sliding-window inference: predictor(batch) -> logits.

    model: a Session, or the path of an ONNX / TF.js model (opened with `threads`).
    output: which output to return for models with several (index or name); None returns
        all of them as a tuple (one output: the output itself).

    A batch larger than a model's fixed batch dimension is run in pieces and concatenated.
    """

    def __init__(self, model, threads=None, output=None):
        self.session = model if isinstance(model, Session) else Session(os.fspath(model), threads=threads)
        if len(self.session.inputs) != 1:
            raise InvalidInputError(
                f"Predictor needs a model with one input, {self.session.path} has {len(self.session.inputs)}")
        names = [o.name for o in self.session.outputs]
        if isinstance(output, str):
            if output not in names:
                raise InvalidInputError(f"the model has no output named '{output}' (outputs: {', '.join(names)})")
            output = names.index(output)
        self.output = output
        shape = self.session.inputs[0].shape
        self._fixed_batch = shape[0] if shape and isinstance(shape[0], int) else None

    def _run(self, array):
        n = array.shape[0] if array.ndim else 0
        if self._fixed_batch is None or n == self._fixed_batch or n % self._fixed_batch:
            return self.session.run([array])
        step = self._fixed_batch
        parts = [self.session.run([array[i:i + step]]) for i in range(0, n, step)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def __call__(self, x, *args, **kwargs):
        if _is_torch_tensor(x):
            torch = _torch()
            array = x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
            outputs = [torch.from_numpy(o).to(device=x.device, dtype=x.dtype) for o in self._run(array)]
        else:
            outputs = self._run(np.ascontiguousarray(x, dtype=np.float32))
        if self.output is not None:
            return outputs[self.output]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __repr__(self):
        return f"Predictor({self.session!r})"
