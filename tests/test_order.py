"""Merge order: exact search checked against brute force, dependencies, ties, real branches."""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import combinations, permutations
from pathlib import Path

import pytest

from paradev.order import EXACT_LIMIT, Problem, compute_merge_order, solve
from paradev.workspace import open_workspace
from tests.conftest import APP
from tests.helpers import Result, agent_tree, commit, rev


def problem(
    agents: list[int],
    edges: list[tuple[int, int]] | None = None,
    base: set[int] | None = None,
    providers: dict[int, set[int]] | None = None,
    size: dict[int, int] | None = None,
) -> Problem:
    conflicts: dict[int, set[int]] = {a: set() for a in agents}
    for left, right in edges or []:
        conflicts[left].add(right)
        conflicts[right].add(left)
    return Problem(
        agents=agents,
        conflicts={a: frozenset(c) for a, c in conflicts.items()},
        base_conflicts=frozenset(base or ()),
        providers={a: frozenset((providers or {}).get(a, ())) for a in agents},
        size=size or {a: 1 for a in agents},
    )


def cost(p: Problem, order: tuple[int, ...] | list[int]) -> int:
    landed: set[int] = set()
    hits = 0
    for agent in order:
        hits += p.hits(agent, landed)
        landed.add(agent)
    return hits


def respects(p: Problem, order: list[int]) -> bool:
    seen: set[int] = set()
    for agent in order:
        if not p.providers.get(agent, frozenset()) <= seen:
            return False
        seen.add(agent)
    return True


def test_exact_search_matches_brute_force_on_random_graphs() -> None:
    rng = random.Random(7)
    for _ in range(60):
        n = rng.randint(1, 6)
        agents = list(range(1, n + 1))
        edges = [(a, b) for a in agents for b in agents if a < b and rng.random() < 0.4]
        providers = {b: {a} for a in agents for b in agents if a < b and rng.random() < 0.15}
        assert_optimal(problem(agents, edges, {a for a in agents if rng.random() < 0.2}, providers))


def assert_optimal(p: Problem) -> None:
    """solve() is exact, complete, respects dependencies and matches brute force."""
    valid = [o for o in permutations(p.agents) if respects(p, list(o))]
    result = solve(p)
    assert result.exact
    assert respects(p, result.order)
    assert sorted(result.order) == p.agents
    assert result.conflicting_rebases == cost(p, result.order) == min(cost(p, o) for o in valid)


def test_the_conflict_free_agents_land_before_the_conflicting_ones() -> None:
    # 1 conflicts with 2 and 3; landing 2 and 3 first costs one rebase (agent 1's).
    result = solve(problem([1, 2, 3], [(1, 2), (1, 3)]))
    assert result.order == [2, 3, 1]
    assert result.conflicting_rebases == 1
    assert "its rebase will conflict with agent 2, agent 3" in result.reasons[1]
    assert "rebases cleanly" in result.reasons[2]


def test_ties_go_to_the_smaller_change_then_the_lower_id() -> None:
    result = solve(problem([1, 2, 3, 4], size={1: 5, 2: 1, 3: 5, 4: 1}))
    assert result.order == [2, 4, 1, 3]
    assert result.conflicting_rebases == 0


def test_providers_land_before_consumers_even_when_it_costs_a_rebase() -> None:
    # Without the dependency 2 -> 1 would be free; 1 must land first.
    result = solve(problem([1, 2, 3], [(1, 3)], providers={2: {3}}, size={1: 1, 2: 1, 3: 9}))
    assert result.order.index(3) < result.order.index(2)
    assert result.conflicting_rebases == 1
    assert "after its provider(s) agent 3" in result.reasons[2]


def test_base_conflicts_count_wherever_the_agent_lands() -> None:
    result = solve(problem([1, 2], base={2}))
    assert result.conflicting_rebases == 1
    assert "conflict with base" in result.reasons[2]


def test_a_dependency_cycle_between_agents_is_ignored_and_said() -> None:
    result = solve(problem([1, 2], providers={1: {2}, 2: {1}}))
    assert sorted(result.order) == [1, 2]
    assert "dependency cycle between agents 1, 2 ignored" in result.reasons[1]


def test_beyond_the_exact_limit_the_stated_heuristic_is_used() -> None:
    rng = random.Random(3)
    agents = list(range(1, EXACT_LIMIT + 5))
    edges = [(a, b) for a in agents for b in agents if a < b and rng.random() < 0.2]
    providers = {5: {9}, 12: {3}}
    p = problem(agents, edges, providers=providers)

    result = solve(p)

    assert result.exact is False
    assert sorted(result.order) == agents and respects(p, result.order)
    assert result.conflicting_rebases == cost(p, result.order)
    assert all("heuristic: greedy" in text for text in result.reasons.values())


def test_exact_search_handles_the_limit() -> None:
    agents = list(range(1, EXACT_LIMIT + 1))
    edges = [(a, a + 1) for a in agents[:-1]]  # a path: every other agent can land first
    result = solve(problem(agents, edges))
    assert result.exact is True
    assert result.conflicting_rebases == EXACT_LIMIT // 2


def test_sparse_graphs_solved_per_component_match_brute_force() -> None:
    rng = random.Random(11)
    for _ in range(25):
        n = rng.randint(4, 7)
        agents = list(range(1, n + 1))
        edges = [(a, b) for a in agents for b in agents if a < b and rng.random() < 0.15]
        providers = {b: {a} for a in agents for b in agents if a < b and rng.random() < 0.05}
        assert_optimal(problem(agents, edges, {a for a in agents if rng.random() < 0.2}, providers))


def test_many_agents_in_small_components_stay_exact() -> None:
    # 60 agents: 20 triangles of mutual conflicts; each costs exactly 2 conflicting rebases.
    agents = list(range(1, 61))
    edges = [
        (a, b) for first in range(1, 61, 3) for a, b in combinations(range(first, first + 3), 2)
    ]
    providers = {4: {1}}  # links the first two triangles into one component of 6
    p = problem(agents, edges, providers=providers)

    result = solve(p)

    assert result.exact is True
    assert sorted(result.order) == agents and respects(p, result.order)
    assert result.conflicting_rebases == cost(p, result.order) == 40
    assert not any("heuristic" in text for text in result.reasons.values())


def test_one_component_beyond_the_limit_still_uses_the_heuristic() -> None:
    chain = list(range(1, EXACT_LIMIT + 2))  # one path of 17 agents
    p = problem([*chain, 100], [(a, a + 1) for a in chain[:-1]])
    result = solve(p)
    assert result.exact is False and sorted(result.order) == [*chain, 100]


def completed(
    cli: Callable[..., Result], worktrees: Path, agent: int, files: dict[str, str | bytes | None]
) -> None:
    """The agent starts its task, commits ``files`` and completes it: work the train would land."""
    assert cli("start", str(agent)).code == 0
    commit(agent_tree(worktrees, agent), files)
    assert cli("complete", str(agent)).code == 0


@pytest.fixture
def three_agents(set_up: Path, repo: Path, cli: Callable[..., Result]) -> Path:
    """Agents 1 and 2 conflict on app.py; agent 3 changes more files, harmlessly."""
    completed(cli, set_up, 1, {"src/app.py": APP.replace("return 5\n", "return 'a'\n")})
    completed(cli, set_up, 2, {"src/app.py": APP.replace("return 5\n", "return 'b'\n")})
    completed(cli, set_up, 3, {"README.md": "# 3\n", "docs/x.md": "x\n"})
    return repo


def test_compute_merge_order_on_real_branches_saves_the_order(three_agents: Path) -> None:
    ws = open_workspace(three_agents)

    result = compute_merge_order(ws)

    assert result.order == [1, 2, 3]  # ties: smaller change first, then id
    assert result.conflicting_rebases == 1
    assert ws.store.read().merge_order == [1, 2, 3]


def test_depends_on_makes_the_provider_land_first(three_agents: Path) -> None:
    plan = three_agents / "plan.toml"
    text = plan.read_text(encoding="utf-8").replace("depends_on = [11]", "depends_on = [13]")
    plan.write_text(text, encoding="utf-8")

    result = compute_merge_order(open_workspace(three_agents))

    assert result.order.index(3) < result.order.index(1)
    assert result.conflicting_rebases == 1


def test_agents_without_work_are_not_listed(
    set_up: Path, cli: Callable[..., Result], repo: Path
) -> None:
    completed(cli, set_up, 2, {"README.md": "# 2\n"})
    commit(agent_tree(set_up, 3), {"docs/wip.md": "not completed\n"})  # no completed task

    result = cli("merge-order", "--json")

    assert result.code == 0, result.err
    data = result.json()
    assert data == {
        "order": [2],
        "conflicting_rebases": 0,
        "reasons": {"2": data["reasons"]["2"]},
        "details": {
            "2": {
                "agent": 2,
                "branch": "parallel-dev/agent-2",
                "issues": [12],
                "conflicts_with": [],
                "conflicts_with_base": False,
            }
        },
        "exact": True,
    }
    assert "lands 1st" in data["reasons"]["2"]
    status = cli("status", "--json").json()
    assert status["merge_order"] == [2]


def test_merge_order_human_view(three_agents: Path, cli: Callable[..., Result]) -> None:
    result = cli("merge-order")
    assert result.code == 0
    assert result.out.startswith("merge order: 1 -> 2 -> 3")
    assert "1 conflicting rebase(s) (exact search)" in result.out


def test_no_work_at_all(set_up: Path, cli: Callable[..., Result]) -> None:
    result = cli("merge-order")
    assert result.code == 0 and "no agent has work to merge" in result.out


def test_merge_order_json_details_name_branch_issues_and_conflicts(
    three_agents: Path, cli: Callable[..., Result]
) -> None:
    commit(three_agents, {"src/app.py": APP.replace("return 5\n", "return 'base'\n")})

    data = cli("merge-order", "--json").json()

    assert data["order"] == [1, 2, 3] and data["conflicting_rebases"] == 2
    assert set(data["reasons"]) == {"1", "2", "3"}  # prose, as before
    assert all(isinstance(text, str) for text in data["reasons"].values())
    assert data["details"] == {
        "1": {
            "agent": 1,
            "branch": "parallel-dev/agent-1",
            "issues": [11],
            "conflicts_with": [2],
            "conflicts_with_base": True,
        },
        "2": {
            "agent": 2,
            "branch": "parallel-dev/agent-2",
            "issues": [12],
            "conflicts_with": [1],
            "conflicts_with_base": True,
        },
        "3": {
            "agent": 3,
            "branch": "parallel-dev/agent-3",
            "issues": [13],
            "conflicts_with": [],
            "conflicts_with_base": False,
        },
    }


def test_merge_order_human_view_names_the_issues(
    three_agents: Path, cli: Callable[..., Result]
) -> None:
    out = cli("merge-order").out
    assert "  agent 1 (#11): lands 1st; rebases cleanly" in out
    assert "  agent 2 (#12): lands 2nd; its rebase will conflict with agent 1" in out


def test_the_saved_order_records_what_it_was_computed_from(three_agents: Path) -> None:
    ws = open_workspace(three_agents)

    compute_merge_order(ws)

    source = ws.store.read().merge_order_from
    tips = {str(a): rev(three_agents, f"parallel-dev/agent-{a}") for a in (1, 2, 3)}
    assert source == {"base": rev(three_agents, "main"), "tips": tips, "completed": [1, 2, 3]}
