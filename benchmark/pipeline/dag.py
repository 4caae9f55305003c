"""The stages of ``pipeline.graph`` at each seed, every path resolved (``instances``), and the DAG
they form, derived from deps and outs as DVC derives its own (``upstream``, ``waves``,
``with_upstream``)."""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from benchmark.pipeline.graph import Stage, stages


def resolve(text: str, params: dict, seed=None) -> str:
    """Fill DVC templates in ``text`` (``${item.seed}`` with ``seed``, other keys from params)."""
    def value(m):
        key = m.group(1)
        if key == "item.seed":
            return str(seed)
        node = params
        for part in re.findall(r"[^.\[\]]+", key):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return str(node)
    return re.sub(r"\$\{([^}]+)\}", value, text)


@dataclass
class Instance:
    """One stage at one seed, every path resolved: what runs."""
    name: str
    stage: Stage
    seed: int | None
    deps: list[str]
    outs: list[str]

    @property
    def cmd(self) -> str:
        return resolve(self.stage.cmd, {}, self.seed) if self.seed is not None else self.stage.cmd

    @property
    def argv(self) -> list[str]:
        return self.cmd.split()


def instances(params: dict, all_stages: list[Stage] | None = None) -> list[Instance]:
    out = []
    for st in all_stages if all_stages is not None else stages(params):
        for seed in (params["grid"]["seeds"] if st.seeded else [None]):
            name = f"{st.name}@{seed}" if st.seeded else st.name
            inst = Instance(name, st, seed, [resolve(d, params, seed) for d in st.deps],
                            [resolve(o.path, params, seed) for o in st.outs])
            if not st.seeded:  # ${grid.seeds[0]} and friends in a command
                inst.stage = Stage(**{**st.__dict__, "args": {k: resolve(str(v), params) for k, v in st.args.items()}})
            out.append(inst)
    return out


def producers(insts: list[Instance]):
    """``find(dep)``: the instances whose outputs ``dep`` reads (an output it lies inside, or the
    outputs under it when it is a directory), as DVC relates deps to outs. Each lookup walks the
    dep's ancestors and the contiguous run of outputs under it in a sorted index: linear in the grid."""
    by_out: dict[str, list[str]] = {}
    for i in insts:
        for o in i.outs:
            by_out.setdefault(o.rstrip("/"), []).append(i.name)
    keys = sorted(by_out)

    def find(dep: str) -> set[str]:
        parts = dep.rstrip("/").split("/")
        found = {n for j in range(1, len(parts) + 1) for n in by_out.get("/".join(parts[:j]), ())}
        below = "/".join(parts) + "/"
        for k in keys[bisect.bisect_left(keys, below):]:
            if not k.startswith(below):
                break
            found.update(by_out[k])
        return found
    return find


def upstream(insts: list[Instance]) -> dict[str, list[str]]:
    """{instance: the instances whose outputs it reads}, as DVC derives its DAG."""
    find = producers(insts)
    return {i.name: sorted({n for d in i.deps for n in find(d)} - {i.name}) for i in insts}


def waves(insts: list[Instance], only: set[str] | None = None) -> list[list[Instance]]:
    """Dependency waves: every instance after all its upstream ones (restricted to ``only``)."""
    up, by_name = upstream(insts), {i.name: i for i in insts}
    todo = [i.name for i in insts if only is None or i.name in only]
    level: dict[str, int] = {}

    def depth(n: str) -> int:
        if n not in level:
            level[n] = 1 + max((depth(u) for u in up[n] if only is None or u in only), default=-1)
        return level[n]
    out: list[list[Instance]] = []
    for n in todo:
        d = depth(n)
        out += [[] for _ in range(d + 1 - len(out))]
        out[d].append(by_name[n])
    return [w for w in out if w]


def with_upstream(insts: list[Instance], names: set[str]) -> set[str]:
    up, todo, seen = upstream(insts), list(names), set()
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(up[n])
    return seen
