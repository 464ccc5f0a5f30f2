"""The search tree of :class:`TreeSearch` and its three expansion policies.

A :class:`Node` is a partial solution: the steps from the root (the bare
question) down to it, the step reward of its last step and, for MCTS, its
visit count and backed-up value. A policy looks at the :class:`SearchTree`
between rounds and says which nodes to expand how many times
(``select(tree) -> [(node, n_children), ...]``); the core turns that into
continuation requests. Policies are small objects behind that one interface:

* :class:`beam` keeps the ``width`` open nodes with the highest step reward
  (the rest are pruned) and expands each ``expand`` times (the root
  ``width * expand`` times, to fill the beam);
* :class:`rebase` (Wu et al., 2024) spreads ``width`` expansions, less one per
  finished leaf, over the open nodes in proportion to ``softmax(reward / T)``;
  nodes that get none are pruned;
* :class:`mcts` runs ``simulations`` UCT selections per round
  (``Q/N + c * sqrt(ln N_parent / N)``), each expanding one child of the node
  it reaches; the new child's step reward is backed up as the rollout value.

Example:
    >>> tree = SearchTree()
    >>> a, b, c = (tree.add(tree.root, s) for s in ("x", "y", "z"))
    >>> for node, r in ((a, 0.2), (b, 0.9), (c, 0.5)):
    ...     tree.score(node, r)
    >>> [(n.steps, k) for n, k in beam(width=2, expand=3).select(tree)]
    [(('y',), 3), (('z',), 3)]
    >>> a.pruned
    True
    >>> [(n.steps, k) for n, k in rebase(width=4, temperature=0.1).select(tree)]
    [(('y',), 4)]
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Literal

from dynasor_agents.errors import InvalidInputError

__all__ = ["Node", "SearchTree", "TreePolicy", "allocate", "beam", "mcts", "rebase", "uct"]


@dataclass(eq=False)
class Node:
    """One partial solution in the tree.

    Attributes:
        id: Position in :attr:`SearchTree.nodes` (the root is 0).
        parent: The node it extends (``None`` for the root).
        steps: The steps from the root, delimiter excluded.
        reward: Step reward of the last step in ``[0, 1]`` (``None``: not scored yet).
        terminal: A finished leaf (final answer, end of text or ``max_depth``).
        answer: The final answer of a finished leaf, if one was found.
        children: The nodes that extend it.
        visits: MCTS visit count (scored nodes in its subtree).
        value: Sum of the rewards backed up through it.
        pruned: Dropped by the policy; never expanded again.
    """

    id: int
    parent: Node | None
    steps: tuple[str, ...]
    reward: float | None = None
    terminal: bool = False
    answer: str | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0
    pruned: bool = False

    @property
    def depth(self) -> int:
        """Number of steps."""
        return len(self.steps)

    @property
    def is_open(self) -> bool:
        """Not finished, pruned or expanded, and scored (or the root): can be expanded."""
        scored = self.reward is not None or self.parent is None
        return scored and not (self.terminal or self.pruned or self.children)

    def __repr__(self) -> str:
        return (
            f"Node({self.id}, depth={self.depth}, reward={self.reward}, terminal={self.terminal})"
        )


class SearchTree:
    """The nodes of one search, root first."""

    def __init__(self) -> None:
        self.root = Node(0, None, ())
        self.nodes: list[Node] = [self.root]

    def add(self, parent: Node, step: str) -> Node:
        """Create the child of ``parent`` that appends ``step``."""
        child = Node(len(self.nodes), parent, (*parent.steps, step))
        parent.children.append(child)
        self.nodes.append(child)
        return child

    def score(self, node: Node, reward: float) -> None:
        """Set ``node``'s step reward and back it up to the root (visits, value)."""
        node.reward = reward
        walk: Node | None = node
        while walk is not None:
            walk.visits += 1
            walk.value += reward
            walk = walk.parent

    @property
    def size(self) -> int:
        """Nodes created by expansion (the root excluded)."""
        return len(self.nodes) - 1

    def open_nodes(self) -> list[Node]:
        """Nodes a policy may expand."""
        return [n for n in self.nodes if n.is_open]

    def leaves(self) -> list[Node]:
        """Finished, scored leaves, in creation order."""
        return [n for n in self.nodes if n.terminal and n.reward is not None]


class TreePolicy(abc.ABC):
    """Chooses the nodes to expand in the next round.

    Attributes:
        aggregate: How step rewards become the reward Certaindex: ``"mean"``
            (MCTS) or ``"max"`` (REBASE, beam), as in the Dynasor paper.
    """

    aggregate: Literal["mean", "max"] = "max"

    @abc.abstractmethod
    def select(self, tree: SearchTree) -> list[tuple[Node, int]]:
        """``(node, children to sample)`` pairs for one round; empty when done."""


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _by_reward(node: Node) -> tuple[float, int]:
    return (-(node.reward if node.reward is not None else 1.0), node.id)


class beam(TreePolicy):  # noqa: N801 - lowercase like the controller's policy objects
    """Beam search over steps: keep the top ``width`` open nodes, expand each ``expand`` times.

    Args:
        width: Nodes kept per round.
        expand: Children sampled from each kept node.
    """

    def __init__(self, width: int = 4, expand: int = 2) -> None:
        self.width = _positive_int("beam width", width)
        self.expand = _positive_int("beam expand", expand)

    def select(self, tree: SearchTree) -> list[tuple[Node, int]]:
        frontier = sorted(tree.open_nodes(), key=_by_reward)
        if frontier == [tree.root]:
            return [(tree.root, self.width * self.expand)]
        for dropped in frontier[self.width :]:
            dropped.pruned = True
        return [(node, self.expand) for node in frontier[: self.width]]

    def __repr__(self) -> str:
        return f"beam(width={self.width}, expand={self.expand})"


def allocate(rewards: list[float], width: int, temperature: float) -> list[int]:
    """Split ``width`` expansions in proportion to ``softmax(reward / temperature)``.

    Rounds by largest remainder, so the shares sum to exactly ``width``.

    Example:
        >>> allocate([0.9, 0.5, 0.1], 8, 0.2)
        [7, 1, 0]
        >>> allocate([0.5, 0.5], 3, 1.0)
        [2, 1]
    """
    if not rewards or width < 1:
        return [0] * len(rewards)
    top = max(rewards)
    weights = [math.exp((r - top) / temperature) for r in rewards]
    total = sum(weights)
    exact = [width * w / total for w in weights]
    shares = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (shares[i] - exact[i], i))
    for i in by_remainder[: width - sum(shares)]:
        shares[i] += 1
    return shares


class rebase(TreePolicy):  # noqa: N801
    """REBASE (Wu et al., 2024): reward-balanced expansion of the open nodes.

    Each round has ``width`` minus the finished leaves so far to spend; open
    node ``j`` gets ``round(B * softmax(R / T)_j)`` children (largest remainder,
    summing to ``B``) and nodes that get none are pruned.

    Args:
        width: Total expansion budget per round (the number of solutions sought).
        temperature: Softmax temperature ``T > 0``; lower is greedier.
    """

    def __init__(self, width: int = 8, temperature: float = 0.2) -> None:
        self.width = _positive_int("rebase width", width)
        if not isinstance(temperature, int | float) or not math.isfinite(temperature):
            raise InvalidInputError(f"rebase temperature must be a number, got {temperature!r}")
        if temperature <= 0:
            raise InvalidInputError(f"rebase temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def select(self, tree: SearchTree) -> list[tuple[Node, int]]:
        frontier = tree.open_nodes()
        budget = self.width - len([n for n in tree.nodes if n.terminal])
        rewards = [1.0 if n.reward is None else n.reward for n in frontier]
        shares = allocate(rewards, budget, self.temperature)
        for node, share in zip(frontier, shares, strict=True):
            node.pruned = share == 0
        return [(n, k) for n, k in zip(frontier, shares, strict=True) if k]

    def __repr__(self) -> str:
        return f"rebase(width={self.width}, temperature={self.temperature})"


def uct(child: Node, parent: Node, c: float) -> float:
    """``Q/N + c * sqrt(ln N_parent / N)``; ``inf`` for an unvisited child.

    Example:
        >>> root = Node(0, None, (), visits=10)
        >>> round(uct(Node(1, root, ("a",), visits=4, value=2.0), root, 1.41), 3)
        1.57
    """
    if child.visits == 0:
        return math.inf
    explore = math.sqrt(math.log(max(parent.visits, 1)) / child.visits)
    return child.value / child.visits + c * explore


class mcts(TreePolicy):  # noqa: N801
    """Monte-Carlo tree search with UCT selection, one child per selection.

    Each round runs ``simulations`` selections from the root: descend by UCT
    while the node has ``branching`` children, else expand it once. Selections
    in one round see each other's pending expansions, so a round spreads out.
    There are no rollouts: the new step's reward is the rollout value and is
    backed up to the root (mean value ``Q/N`` per node).

    Args:
        simulations: Selections (so expansions) per round.
        c: Exploration constant.
        branching: Children a node gets before selection descends past it.
    """

    aggregate: Literal["mean", "max"] = "mean"

    def __init__(self, simulations: int = 4, c: float = 1.41, branching: int = 3) -> None:
        self.simulations = _positive_int("mcts simulations", simulations)
        self.branching = _positive_int("mcts branching", branching)
        if not isinstance(c, int | float) or not math.isfinite(c) or c < 0:
            raise InvalidInputError(f"mcts c must be a finite number >= 0, got {c!r}")
        self.c = float(c)

    def select(self, tree: SearchTree) -> list[tuple[Node, int]]:
        pending: dict[int, int] = {}
        for _ in range(self.simulations):
            node = self._descend(tree.root, pending)
            if node is not None:
                pending[node.id] = pending.get(node.id, 0) + 1
        return [(tree.nodes[i], k) for i, k in pending.items()]

    def _descend(self, node: Node, pending: dict[int, int]) -> Node | None:
        while True:
            if len(node.children) + pending.get(node.id, 0) < self.branching:
                return node
            live = [c for c in node.children if not self._exhausted(c, pending)]
            if not live:
                return None
            scores = [uct(child, node, self.c) for child in live]
            node = live[scores.index(max(scores))]

    def _exhausted(self, node: Node, pending: dict[int, int]) -> bool:
        """Nothing left to expand below ``node`` (this round)."""
        if node.terminal or node.pruned or node.reward is None:
            return True
        if len(node.children) + pending.get(node.id, 0) < self.branching:
            return False
        return all(self._exhausted(c, pending) for c in node.children)

    def __repr__(self) -> str:
        return f"mcts(simulations={self.simulations}, c={self.c}, branching={self.branching})"
