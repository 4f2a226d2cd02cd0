"""Knowledge distillation with fixed targets: trained networks of the series as teachers.

A one-hot label says an image is a cat and nothing else. A trained network's probabilities
say more: this cat looks a little like a dog, that one not at all. Training a student on a
mix of the labels and such probabilities (Hinton et al., 2015, "Distilling the knowledge in
a neural network") often lets a small network learn more per epoch than from labels alone.

Here the teachers' probabilities are computed once, before training, on the clean training
images: averaged over each image and its mirror image (flip TTA) and over the teachers. The
student then trains on them with the usual augmentation; a shift of a few pixels hardly
changes what a teacher would say, and the teachers cost no time during training.

Use teachers that never saw the student's validation images: the series' runs with the same
seed share its validation split (``data.train_val_split``).
"""

from __future__ import annotations

import numpy as np

from . import evaluation
from .input_pipeline import one_hot


def teacher_probabilities(teachers, images, batch_size: int = 500) -> np.ndarray:
    """Mean flip-TTA class probabilities ``(N, 10)`` of the ``.keras`` files (or models) in ``teachers``."""
    if not teachers:
        raise ValueError("no teachers given")
    total = 0.0
    for teacher in teachers:
        model = evaluation.load_model(teacher) if not hasattr(teacher, "predict") else teacher
        total = total + evaluation.predict(model, images, tta=True, batch_size=batch_size)
    return (total / len(teachers)).astype("float32")


def soft_targets(labels, teacher_probs, teacher_weight: float) -> np.ndarray:
    """``teacher_weight`` x the teachers' probabilities + the rest x the one-hot labels, rows ``(N, 10)``.

    0 gives the one-hot labels back; 1 the teachers' probabilities alone, mistakes included.
    """
    if not 0.0 <= teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must lie in [0, 1], got {teacher_weight}")
    hard = one_hot(labels)
    if teacher_probs.shape != hard.shape:
        raise ValueError(f"teacher probabilities {teacher_probs.shape} do not match the labels {hard.shape}")
    return (teacher_weight * teacher_probs + (1.0 - teacher_weight) * hard).astype("float32")
