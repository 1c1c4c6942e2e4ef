"""Training: the PyTorch engine, the Keras wrapper, the losses and the one training record.

Start with :mod:`.torch_engine` (``train_one_epoch``, ``fit``, ``evaluate``, ``predict``; its names are also this
package's). Its private parts: :mod:`._batches` (checked batches, the loss), :mod:`._checkpoint` (resume, the
digest) and :mod:`._records` (epoch sums, the best epoch). Then:

- :mod:`.two_phase`: ``fit_two_phase``, transfer learning as two calls of ``fit`` (head, then fine-tuning);
- :mod:`.keras_fit`: the course's Keras ``fit``/``evaluate``/``predict`` (02, 03, 06);
- :mod:`.losses`: focal loss for both frameworks and the prior-bias initialisation (04);
- :mod:`.history`: ``History``, what every fit returns.
"""
from .._lazy import face

__getattr__, __dir__ = face(__name__, ["torch_engine", "two_phase", "keras_fit", "losses", "history"],
                            fronts=["torch_engine", "two_phase", "losses", "history"])
