"""The comm: two-way messages between a running call and the scheduler (internal).

Its wire format (`_wire`), its worker side, the
[`Comm`][byop_nb.scheduling.Comm] a call talks through (`_worker`), and its
main side, the hub that listens and reads connections in the event loop
(`_hub`). The public face is `byop_nb.scheduling.comms` (`CommTask`, `Msg`).
"""
