"""Streaming per-class event counters for every labelling (real + permuted) at once.

For one layer and one event, ``counts[r * K + k, e]`` is the number of samples with label k under
labelling r whose event e fired; each batch adds its events to the rows of its labels. Counts are
float32: exact for integers below 2**24 per class.

Naive Bayes (``separation=naive_bayes``) stays streaming because the run orders samples as a *fit* half
followed by a *test* half (balanced, n // 2 per class first): when the fit half is done the counters are
turned into Bernoulli naive-Bayes weights (Laplace smoothing, alpha = 1; uniform class prior), and every
test-half sample is scored as it streams past. Accuracy = fraction of test samples whose argmax class
equals their label, per labelling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class BatchLabels:
    """The labels of one batch under every labelling, in the two forms the counters use."""

    def __init__(self, labellings: torch.Tensor, num_classes: int, dtype: torch.dtype) -> None:
        count, self.size = labellings.shape
        self.labellings = labellings  # (L, B)
        self.num_classes = num_classes
        offsets = num_classes * torch.arange(count, device=labellings.device)[:, None]
        self.rows = labellings + offsets  # (L, B) counter row r*K + k of each sample
        self.onehot = torch.zeros(count * num_classes, self.size, dtype=dtype, device=labellings.device)
        self.onehot.scatter_(0, self.rows, 1.0)  # (L*K, B)


class EventCounters:
    """Counters of one event family of one layer, plus naive-Bayes scoring.

    The columns (Bernoulli variables) are split into contiguous blocks, one per chunk of output units the
    pass computes at a time, so every update writes a contiguous tensor (``index_add_`` into a column
    slice of one wide tensor is several times slower on CPU).
    """

    def __init__(
        self,
        rows: int,
        widths: Sequence[int],
        *,
        naive_bayes: bool,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.blocks = [torch.zeros(rows, width, dtype=dtype, device=device) for width in widths]  # (L*K, w)
        self.naive_bayes = naive_bayes
        self.nb_log_odds: list[torch.Tensor] = []  # per block (L*K, w), once the fit half is done
        self.nb_bias: torch.Tensor | None = None  # (L*K,)
        self.scores: torch.Tensor | None = None  # (B, L*K) of the current test batch
        self.nb_correct: torch.Tensor | None = None  # (L,) correct test predictions
        self.nb_tested = 0

    @property
    def counts(self) -> torch.Tensor:
        """All columns in order. (L*K, width)"""
        return self.blocks[0] if len(self.blocks) == 1 else torch.cat(self.blocks, dim=1)

    def begin_batch(self, batch: int) -> None:
        """Start scoring a test-half batch (no-op before the fit half is done)."""
        if self.nb_bias is not None:
            self.scores = self.nb_bias.expand(batch, -1).clone()  # (B, L*K)

    def add(self, labels: BatchLabels, events: torch.Tensor, block: int = 0) -> None:
        """Count ``events`` (B, w), 0/1 or bool, into column block ``block``.

        CPU: one row-wise ``index_add_`` per labelling (memory-bound, no wasted multiplications);
        GPU: a single ``onehot @ events`` matrix product for all labellings.
        """
        counts = self.blocks[block]  # (L*K, w)
        fired = events.to(counts.dtype)  # (B, w) no copy when already 0/1 floats
        if fired.is_cuda:
            counts.addmm_(labels.onehot, fired)
        else:
            for rows in labels.rows:  # (B,) one labelling
                counts.index_add_(0, rows, fired)
        self.score(fired, block)

    @property
    def scoring(self) -> bool:
        """A naive-Bayes test batch is being scored (events must be passed to :meth:`score`)."""
        return self.scores is not None

    def score(self, fired: torch.Tensor, block: int = 0) -> None:
        """Add ``fired`` (B, w) to the naive-Bayes scores of the test batch (counted elsewhere)."""
        if self.scores is not None:
            self.scores.addmm_(fired.to(self.blocks[block].dtype), self.nb_log_odds[block].T)

    def end_batch(self, labels: BatchLabels) -> None:
        """Tally naive-Bayes predictions of the test batch against every labelling."""
        if self.scores is None:
            return
        labellings = labels.labellings  # (L, B)
        count, batch = labellings.shape
        predicted = self.scores.reshape(batch, count, labels.num_classes).argmax(-1).T  # (L, B)
        correct = (predicted == labellings).sum(-1)  # (L,)
        self.nb_correct = correct if self.nb_correct is None else self.nb_correct + correct
        self.nb_tested += batch
        self.scores = None

    def fit_naive_bayes(self, class_counts: torch.Tensor) -> None:
        """Freeze the fit-half counters into NB weights. ``class_counts`` (L*K,) fit samples per row."""
        if not self.naive_bayes:
            return
        n = class_counts.to(self.blocks[0].dtype)[:, None]  # (L*K, 1)
        bias = torch.zeros_like(n[:, 0])
        for counts in self.blocks:
            log_off = torch.log(n - counts + 1)  # log (1 - p) + log(n + 2), Laplace-smoothed
            bias += log_off.sum(-1) - counts.shape[1] * torch.log(n[:, 0] + 2)
            self.nb_log_odds.append(torch.log(counts + 1).sub_(log_off))  # log p - log (1 - p)
        self.nb_bias = bias  # (L*K,) sum over variables of log (1 - p)

    def nb_accuracy(self) -> torch.Tensor:
        """Held-out naive-Bayes accuracy per labelling. (L,)"""
        if self.nb_correct is None or self.nb_tested == 0:
            raise RuntimeError("naive Bayes has no test samples: samples_per_class must be at least 2")
        return self.nb_correct.double() / self.nb_tested

    @property
    def nbytes(self) -> int:
        """Bytes held by the counters and naive-Bayes weights."""
        tensors = [*self.blocks, *self.nb_log_odds]
        return sum(t.numel() * t.element_size() for t in tensors)
