"""azrdp: diagnose and repair Azure Windows VMs that refuse Remote Desktop."""

__version__ = "0.1.0"
