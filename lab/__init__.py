"""The namespace lab: network namespaces, links, NAT boxes and processes for tests, bench and demo.

Root only. Not part of the installed package: tests, bench/ and scripts/ import it with the project
root on sys.path.

    with Lab() as lab:
        a, b = lab.netns("a"), lab.netns("b")           # namespaces "<prefix>-a", "<prefix>-b"
        lab.veth(a, "198.18.0.1/24", b, "198.18.0.2/24") # a point-to-point link
        inet = lab.switch("inet")                        # an L2 segment (a bridge in its own namespace)
        inet.join(a, "198.18.1.1/24")                    # -> device name in a
        home = lab.nat("home", inet, wan="198.18.1.10/24", lan="198.18.10.1/24", kind="easy")
        home.attach(b, "198.18.10.2/24")                 # b behind the NAT (lab/nat.py: easy, hard,
                                                         # firewall; a box as uplink makes a CGNAT)
        br = lab.host_bridge("198.19.7.1/24")            # a bridge on the host, for a host process
        lab.block(a, "198.18.0.9")                       # a drops traffic to and from an address
        lab.resolv_conf(a, "nameserver 198.18.0.2\n")    # a's own /etc/resolv.conf (ip netns exec)
        p = lab.spawn(a, "iperf3", "-s", log=path)       # a process inside a namespace (None: host)
        a.run("ip", "route")                             # a command inside, output captured
        lab.tool(a, "ping", "198.18.0.2")                # lab/nettools.py inside a namespace

Contract:
- Names. Every run has its own prefix, "sm" + 6 random hex digits. Namespaces are "<prefix>-<role>";
  devices visible outside a lab namespace (host bridges and the host ends of their veths) and veths
  the lab names itself are "<prefix><kind><n>"; nft tables are "<prefix>...". Device names the
  caller chooses (`dev="eth0"`) only ever exist inside a namespace of this run.
- Addresses are the caller's, and must come from 198.18.0.0/15 (anything else is refused with a
  LabError before it is configured). Nothing is routed in the host except through a host bridge
  the caller asks for, and only to its own subnet.
- The record. Before anything is created it is written down in a JSON file
  (/run/shadowmesh-lab/<prefix>.json, or the path given as `record`) along with the owner's pid
  (lab/record.py).
- Teardown. Leaving the `with` block (normally, on an exception, a failed test, Ctrl-C, SIGTERM or
  SIGHUP: lab/signals.py) ends every process the lab started and every process living in its
  namespaces (SIGTERM, SIGKILL after `grace` s), deletes the namespaces (with their veths,
  bridges, TUN devices and nft tables), then the host links, the files given to
  `remove_on_exit` and the namespaces' resolv.conf files (`resolv_conf`, with their /etc/netns/<name>
  directories), and last the record.
- A killed run (SIGKILL, a crash) leaves its record behind: `python -m lab clean` undoes every
  record whose owner is gone, and never touches one whose run is still going.
"""

from lab.cmd import LabError, sh
from lab.core import Lab
from lab.links import Segment, free_host_subnet
from lab.nat import NatBox
from lab.netns import Netns
from lab.procs import comm, stop
from lab.record import sweep

__all__ = ["Lab", "LabError", "NatBox", "Netns", "Segment", "comm", "free_host_subnet", "sh", "stop", "sweep"]
