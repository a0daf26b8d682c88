"""The error `ActiveDistillation` raises when the teacher fails."""

import traceback


class TeacherQueryError(RuntimeError):
    """The teacher raised while `ActiveDistillation` queried it.

    Raised `from` the teacher's exception, which `original` also keeps:
    Keras's traceback filter drops `__cause__` when the error leaves
    `fit`, so the message names the original and where it was raised.
    """

    def __init__(self, message: str, original: BaseException):
        frames = traceback.extract_tb(original.__traceback__)
        where = ""
        if frames:
            f = frames[-1]
            where = f" (raised at {f.filename}:{f.lineno} in {f.name})"
        super().__init__(
            f"{message} Teacher error: {type(original).__name__}: "
            f"{original}{where}"
        )
        self.original = original
