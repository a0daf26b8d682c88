"""Public losses of keras-efficient."""

from keras_efficient.losses.debiased import DebiasedDistillationLoss  # noqa: F401
from keras_efficient.losses.distiller import DistillationLossAdapter  # noqa: F401
from keras_efficient.losses.kd import KnowledgeDistillationLoss  # noqa: F401
from keras_efficient.losses.slam import SLaMLoss  # noqa: F401
from keras_efficient.losses.teacher_accuracy import TeacherAccuracy  # noqa: F401
