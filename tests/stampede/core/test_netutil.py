"""free_port picks listening ports below the ephemeral range and never one that is taken."""

from __future__ import annotations

import socket

from stampede.core import netutil


def test_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    ephemeral_low, _ = netutil.ephemeral_port_range()
    for _ in range(20):
        port = netutil.free_port()
        assert netutil.LISTEN_PORTS_FROM <= port < ephemeral_low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # it really is free


def test_a_taken_port_is_skipped_and_a_full_range_falls_back_to_the_kernel(tmp_path, monkeypatch) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        # a range of exactly one port below the ephemeral range: the taken one
        range_file = tmp_path / "ip_local_port_range"
        range_file.write_text(f"{taken + 1}\t{taken + 1000}\n")
        monkeypatch.setattr(netutil, "EPHEMERAL_RANGE_FILE", str(range_file))
        monkeypatch.setattr(netutil, "LISTEN_PORTS_FROM", taken)
        port = netutil.free_port()
        assert port != taken
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
        # a free single port is the one returned
        monkeypatch.setattr(netutil, "LISTEN_PORTS_FROM", taken - 1)
        range_file.write_text(f"{taken}\t{taken + 1000}\n")
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", taken - 1))
        except OSError:
            return  # something else holds it: nothing more to learn here
        assert netutil.free_port() == taken - 1
