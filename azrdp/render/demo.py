"""`azrdp demo`: the fix (or rescue) report, then the wall and simulated time."""

from __future__ import annotations

from azrdp.demo import DemoResult


def render_demo(demo: DemoResult, *, verbose: int = 0) -> str:
    """The fix report as `azrdp fix` prints it (the guest's own before -> after included), then the time."""
    from azrdp.render.fix import render_fix

    if demo.setup.command == "rescue":
        from azrdp.render.rescue import render_rescue

        return "\n".join([render_rescue(demo.fix, verbose=verbose),
                          f"Demo: {demo.wall_seconds:.1f} s of wall time for {_minutes(demo.simulated_seconds)} of "
                          f"simulated Azure time ({demo.setup.speed:g}x). Run it on a real VM: azrdp rescue VM -g "
                          "RESOURCE_GROUP"])
    lines = [render_fix(demo.fix, verbose=verbose)]
    lines.append(f"Demo: {demo.wall_seconds:.1f} s of wall time for {_minutes(demo.simulated_seconds)} of simulated "
                 f"Azure time ({demo.setup.speed:g}x). Run it on a real VM: azrdp fix VM -g RESOURCE_GROUP")
    return "\n".join(lines)


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
