"""The bounded memos of filters, query strings, search arguments and patch changes, shared
by the threads of one sync Client."""

from redisched.memo import BoundedMemo
from redisched.queue import commands, plans
from tests.support.threads import errors_in_threads


def test_a_memo_keeps_its_newest_entries_and_none_for_a_long_key():
    memo: BoundedMemo[int] = BoundedMemo(size=2, max_key_bytes=3)
    for key in (b"a", b"b", b"c", b"long"):
        assert memo.get(key, lambda key=key: len(key)) == len(key)
    assert len(memo) == 2 and memo.lookup(b"a") is None and memo.lookup(b"c") == 1
    assert memo.lookup(b"long") is None, "computed, not kept"
    memo.put(b"c", 5)
    assert len(memo) == 2 and memo.lookup(b"b") == 1, "a key put again makes no room"


def test_threads_of_a_sync_client_filling_the_memos_with_new_keys_never_fail():
    """A runner per thread, each pop with its own filter, each patch with its own priority:
    every call makes room in the memos. Unlocked, two threads dropped the same oldest entry
    (KeyError, raised from a pop or patch) within milliseconds."""

    def work(k: int, i: int) -> None:
        node = plans.as_node({"filters": [{"column": "organisation", "operator": "eq", "value": f"o{k}-{i}"}]})
        commands._search_tail(node, 100, 1000)
        commands._encoded_changes({"priority": k * 1_000_000 + i})

    assert errors_in_threads(work) == []
    assert len(plans._parsed) <= plans._parsed.size and len(commands._SEARCH_TAILS) <= 256
    assert len(commands._ENCODED_CHANGES) <= 64
