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
- ``sampler``: the background tick: one container list call, inspect only
  what changed, cgroup reads (stats API fallback), host figures → Snapshot.
- ``incidents``: which exits are crashes, and the words for crash, OOM,
  health and engine-outage notices.
- ``service``: the Monitor tying sampler, Docker events and the alert book
  together, with the outbox (``bot.outbox``) as its voice.

Nothing here imports ``docker``: the engine feeds container lists and events in.
"""
