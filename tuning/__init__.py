"""Host tuning for the appliance: the core plan and the read-only host audit.

``tuning.coreplan`` turns the machine's topology (sockets, NUMA nodes, SMT siblings, the NIC's NUMA
node) into housekeeping cores and one isolated core per actor. ``tuning.audit`` checks a live host
(or a fixture /proc and /sys tree) knob by knob against ``tuning/knobs.json``, the same knob IDs,
on/off variables and default values the Ansible roles in provision/ use.
"""
