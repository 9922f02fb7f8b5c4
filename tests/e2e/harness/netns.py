"""Two network namespaces on a private bridge, so two slurmd daemons look like two hosts.

Layout (made here, and only these addresses are ever touched):

    root namespace: bridge br77, 10.77.0.254/24 (slurmctld listens here)
    namespace fetalgan-node1: eth0 10.77.0.1/24, default route via 10.77.0.254
    namespace fetalgan-node2: eth0 10.77.0.2/24, default route via 10.77.0.254

The default route only gives Ray an interface to pick its node address from; nothing is
forwarded beyond the bridge (IP forwarding is left as it is). Processes are placed in a
namespace with ``nsenter --net=/run/netns/NAME``, not ``ip netns exec`` (which remounts /sys,
after which slurmd fails with "No filesystem mounted on /sys/fs/cgroup").
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

BRIDGE = "br77"
SERVER_IP = "10.77.0.254"
NODES = {"node1": "10.77.0.1", "node2": "10.77.0.2"}  # Slurm node name -> address
PREFIX = "fetalgan-"  # namespace names: fetalgan-node1, fetalgan-node2


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _exists(kind: str, name: str) -> bool:
    if kind == "netns":
        return name in _ip("netns", "list").stdout.split()
    return _ip("link", "show", name, check=False).returncode == 0


@dataclass
class Namespaces:
    names: dict[str, str]  # node name -> namespace name

    @classmethod
    def create(cls) -> Namespaces:
        """Make the bridge and one namespace per node. Leftovers of an earlier run of this
        harness (same names) are removed first."""
        cls._remove_leftovers()
        made = cls(names={})
        try:
            _ip("link", "add", BRIDGE, "type", "bridge")
            _ip("addr", "add", f"{SERVER_IP}/24", "dev", BRIDGE)
            _ip("link", "set", BRIDGE, "up")
            for index, (node, address) in enumerate(NODES.items(), start=1):
                ns = PREFIX + node
                veth = f"fgveth{index}"
                _ip("netns", "add", ns)
                made.names[node] = ns
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "master", BRIDGE)
                _ip("link", "set", veth, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "route", "add", "default", "via", SERVER_IP)
        except subprocess.CalledProcessError as err:
            made.delete()
            raise RuntimeError(
                f"could not make network namespaces: {err.cmd}: {err.stderr}"
            ) from err
        return made

    def enter(self, node: str) -> list[str]:
        """Command prefix that runs a program inside ``node``'s namespace."""
        return ["nsenter", f"--net=/run/netns/{self.names[node]}"]

    def delete(self) -> None:
        """Delete this harness's namespaces (and with them their veth pairs) and the bridge."""
        for ns in self.names.values():
            _ip("netns", "delete", ns, check=False)
        self.names = {}
        if _exists("link", BRIDGE):
            _ip("link", "delete", BRIDGE, check=False)

    @staticmethod
    def _remove_leftovers() -> None:
        for node in NODES:
            if _exists("netns", PREFIX + node):
                _ip("netns", "delete", PREFIX + node, check=False)
        if _exists("link", BRIDGE):
            _ip("link", "delete", BRIDGE, check=False)
