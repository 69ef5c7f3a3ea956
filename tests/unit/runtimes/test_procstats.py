"""/proc parsing for process-runtime samples."""
from roost.runtimes.process import procstats

STAT = ("4692 (python3 (weird) name) S 4691 4691 4691 0 -1 4194560 1000 0 0 0 "
        "150 30 7 3 20 0 1 0 5000 20000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 "
        "17 1 0 0 0 0 0")

STATUS = """Name:\tpython3
VmRSS:\t   10000 kB
RssAnon:\t    6000 kB
RssFile:\t    3500 kB
RssShmem:\t     500 kB
"""

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:    5000      40    0    0    0     0          0         0     7000      50    0    0    0     0       0          0
"""


def test_parse_stat_handles_parentheses_in_the_name():
    session, ticks = procstats.parse_stat(STAT)
    assert session == 4691
    assert ticks == 150 + 30 + 7 + 3


def test_parse_status_counts_anon_and_shmem_only():
    assert procstats.parse_status_rss(STATUS) == 6500 * 1024


def test_parse_net_dev_skips_loopback():
    assert procstats.parse_net_dev(NET_DEV) == (5000, 7000)
