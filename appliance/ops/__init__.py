"""Operations views of a running appliance: ``appliance top`` (live terminal view) and
``appliance exporter`` (Prometheus metrics over HTTP).

Both read what the actors publish and write nothing they read:

- :mod:`appliance.ops.source` maps the control block, the rings' headers, every
  ``telemetry.<actor>`` region and the actors' status files read-only (``PROT_READ``) and turns
  them into one plain dict per refresh;
- :mod:`appliance.ops.books` is ``top``'s own consumer (``"top"``) of every ``md.<venue>`` ring:
  it rebuilds small books per configured instrument from the L2 records to show the top levels;
- :mod:`appliance.ops.top` renders the dict (textual); ``k`` pulls the kill switch through
  :func:`appliance.engine.killswitch.kill` after a confirmation, the same path as ``appliance kill``;
- :mod:`appliance.ops.exporter` turns the dict into Prometheus metric families at every scrape
  (``grafana/appliance.json`` is a dashboard over them).
"""
