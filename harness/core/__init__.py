"""Shared by every layer: the user-error type and entry points (:mod:`.errors`), durable file
writes (:mod:`.fileio`), progress lines (:mod:`.progress`), advisory file locks (:mod:`.locking`),
a clip's crop size as ``(height, width)`` (:mod:`.crop`)."""
