"""Everything that talks to Azure Resource Manager.

Import this package only where Azure is needed: the SDK costs ~0.5 s to import.
"""
