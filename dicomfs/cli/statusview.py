"""`dicomfs status` for a person: the running serve's report (health.py) as lines."""

from __future__ import annotations

from typing import Any

from .output import count, printable, size


def lines(report: dict[str, Any]) -> list[str]:
    receiver, mount, disk = report["receiver"], report["mount"], report["disk"]
    stored, due, index = report["stored"], report["expiring_within_24h"], report["index"]
    named = f" {report['name']}" if report.get("name") else ""
    held = "?"  # the index is out of reach
    if stored is not None:
        held = f"{count(stored['instances'], 'instance')} in {stored['series']} series, "
        held += size(stored["bytes"])
    reached = index["where"] if index["error"] is None else f"UNREACHABLE: {index['error']}"
    out = [
        f"dicomfs serve{named} {report['version']} (pid {report['pid']}) up since "
        f"{report['since']} ({_span(report['up_seconds'])})",
        f"  store     {report['store']}: {held}",
        f"  index     {reached}",
        f"  disk      {size(disk['free'])} free of {size(disk['total'])}"
        + ("  NEARLY FULL" if disk["nearly_full"] else "")
        + f" (the warning is at {disk['warning_at']})",
        f"  receiver  {receiver['aet']} on {receiver['bind']}:{receiver['port']}"
        + (f" in {receiver['processes']} processes" if receiver.get("processes", 1) > 1 else "")
        + f"; {receiver['letting_in']}",
        f"  mount     {mount['path'] or '-'} ({mount['state']})",
    ]
    if due is not None:
        out.append(
            f"  expiring within 24 h: {due['series']} series, "
            f"{count(due['instances'], 'instance')}, {size(due['bytes'])}"
        )
    received = report["received_today"]
    out.append(
        f"  received today: {count(received['instances'], 'instance')}, {size(received['bytes'])}"
    )
    for aet, counts in report["today"].items():
        parts = [count(counts["associations"], "association")]
        if counts["open"]:
            parts[0] += f" and {counts['open']} open"
        if counts["refused"]:
            parts.append(f"{counts['refused']} refused")
        parts += [count(counts["instances"], "instance"), size(counts["bytes"])]
        if counts["failed"]:
            parts.append(f"{count(counts['failed'], 'instance')} refused")
        out.append(f"    {aet or '(no AE title)':16}  {', '.join(parts)}")
    associations = report["associations"]
    out.append(f"  associations open: {len(associations)}")
    for association in associations:
        out.append(
            f"    {association['calling_aet']}@{association['address']} since "
            f"{association['since']}: {count(association['instances'], 'instance')}, "
            f"{size(association['bytes'])}"
        )
    errors = report["errors"]
    out.append(f"  last warnings and errors: {len(errors) or 'none'}")
    for error in errors:
        out.append(f"    {error['at']} {error['level']} {error['message']}")
    return [printable(line) for line in out]


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days"
