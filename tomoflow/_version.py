"""The version of tomoflow, as installed.

The version comes from the git tag (``vX.Y.Z``) through setuptools-scm when the package is built or
installed: a release is ``X.Y.Z``, a commit after it ``X.Y.(Z+1).devN+g<hash>``, a checkout without tags
or without ``.git`` ``0.1.0`` (``fallback_version`` in ``pyproject.toml``). Every record tomoflow writes
carries it: the ``provenance.tomoflow_version`` of every store, the stamp (``tomoflow_file.tomoflow``)
of every JSON document, model card, checkpoint, ONNX export and picture, and the batch report's
``tomoflow_version``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tomoflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0+unknown"
