"""dropdoc: the packet-drop doctor for Linux servers.

Library first: every CLI command is a call into this package
(`dropdoc.measure.diagnose`, `dropdoc.snapshot.take_snapshot`, `dropdoc.lab`).
"""

__version__ = "0.1.0"
