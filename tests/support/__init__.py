"""Helpers shared by the test folders: ARM stand-ins, sample payload results, loopback RDP peers,
emulator sessions. Imported as ``tests.support.<module>`` (pyproject.toml puts the repository root
on pytest's ``pythonpath``)."""
