import pytest
import torch

from genzoo.errors import UserError
from genzoo.seeds import StackedRandomGenerator, batches, parse_seeds


def test_parse_seeds():
    assert parse_seeds("0-3,10,20-21") == [0, 1, 2, 3, 10, 20, 21]
    assert parse_seeds(" 5 , 7-7 ,") == [5, 7]
    assert parse_seeds(4) == [4] and parse_seeds([3, 1]) == [3, 1]
    for text, message in [("3-1", "ends before it starts"), ("a-b", "expected a list like"), ("", "no seeds"),
                          ("1,x", "expected a list like")]:
        with pytest.raises(UserError, match=message):
            parse_seeds(text)


def _draw(seeds, batch_size, draw):
    chunks = []
    for start in range(0, len(seeds), batch_size):
        rng = StackedRandomGenerator("cpu", seeds[start:start + batch_size])
        chunks.append(draw(rng, len(rng)))
    return torch.cat(chunks)


@pytest.mark.parametrize("draw", [
    lambda rng, n: rng.randn([n, 3, 4, 4]),
    lambda rng, n: rng.rand([n, 5]),
    lambda rng, n: rng.randint(0, 10, [n, 2]),
    lambda rng, n: torch.cat([rng.randn_like(torch.empty(n, 2)), rng.randn([n, 3])], 1),  # successive draws
])
def test_per_seed_noise_is_independent_of_batch_size(draw):
    seeds = list(range(100, 164))
    reference = _draw(seeds, 64, draw)
    for batch_size in (1, 7):
        assert torch.equal(_draw(seeds, batch_size, draw), reference)
    # The noise of a seed is the noise of a generator seeded with that seed alone.
    single = StackedRandomGenerator("cpu", [seeds[5]])
    assert torch.equal(draw(single, 1)[0], reference[5])
    assert not torch.equal(reference[0], reference[1])


def test_generator_checks_batch_and_keeps_dtype():
    rng = StackedRandomGenerator("cpu", [0, 1])
    with pytest.raises(ValueError, match="must equal the number of seeds 2"):
        rng.randn([3, 4])
    assert rng.randn_like(torch.zeros(2, 3, dtype=torch.float64)).dtype == torch.float64


def test_batches_split_across_ranks():
    seeds = list(range(10))
    assert batches(seeds, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    rank0, rank1 = batches(seeds, 3, rank=0, world_size=2), batches(seeds, 3, rank=1, world_size=2)
    assert rank0 == [[0, 1, 2], [6, 7, 8]] and rank1 == [[3, 4, 5], [9]]
    with pytest.raises(UserError, match="--batch"):
        batches(seeds, 0)
