"""Monitoring: measure containers and the host, judge the figures, decide what to tell the owner.

- ``cgroups``: per-container CPU, memory, pids and OOM counters read straight
  from cgroup v1 or v2 files (cheap: no Docker API call per container).
- ``host``: host CPU, memory and disk usage from /proc and statvfs.
- ``snapshot``: the shape of one sample of everything, shared by ``status``
  and the rules.
- ``rules``: thresholds and pure rule functions turning a snapshot into
  conditions.
- ``alerts``: the per (rule, app) alert state machine with hysteresis,
  cooldown and mutes, producing the notices to send.

Nothing here imports ``docker``: the engine feeds container lists and events in.
"""
