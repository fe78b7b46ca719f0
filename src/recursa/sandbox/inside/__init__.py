"""The code that runs INSIDE the sandbox: the worker and the modules it imports beside it.

`worker.py` runs as `python -I -S worker.py`, with this folder (and only this folder of
recursa) on its path: every backend binds, mounts or lets it read this folder alone. So each
module here uses the standard library only and imports its siblings by bare name when run as
a script (`framing`, `mapped`, `confine`, `names`). The host imports the same modules by their
package names (`recursa.sandbox.inside.framing`, ...) to speak the same protocol.
"""
