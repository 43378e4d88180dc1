"""Every public signature carries type hints: parameters and return of each function, method and property.

The walk covers ``streamlev.__all__`` and the ``__all__`` of the public modules (``main`` for the CLI), and for
each public class its own and inherited (from streamlev) public methods, properties, static and class methods,
and ``__init__``.  A new public name without hints fails here, with the missing pieces listed.
"""

import importlib
import inspect

MODULES = (
    "streamlev",
    "streamlev.approx",
    "streamlev.baselines",
    "streamlev.comparison",
    "streamlev.dask",
    "streamlev.hf",
    "streamlev.lewis",
    "streamlev.powerset",
    "streamlev.twopass",
    "streamlev.cli",
)


def missing_hints(name, fn):
    """The unannotated parts of ``fn``'s signature, as ``name: param x`` / ``name: return``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: nothing of ours to check
        return []
    out = [
        f"{name}: param {p.name}"
        for i, p in enumerate(sig.parameters.values())
        if p.annotation is inspect.Parameter.empty and not (i == 0 and p.name in ("self", "cls"))
    ]
    if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        out.append(f"{name}: return")  # __init__ returns None by definition
    return out


def _own_streamlev(obj):
    return str(getattr(obj, "__module__", "")).startswith("streamlev")


def class_members(cls):
    """(qualified name, function) for every public callable a user reaches on ``cls``."""
    seen = set()
    for base in cls.__mro__:
        if not _own_streamlev(base):
            continue
        for attr, value in vars(base).items():
            if attr in seen or (attr.startswith("_") and attr != "__init__"):
                continue
            seen.add(attr)
            if isinstance(value, property):
                fn = value.fget
            elif isinstance(value, (staticmethod, classmethod)):
                fn = value.__func__
            elif inspect.isfunction(value):
                fn = value
            else:
                continue
            yield f"{cls.__module__}.{cls.__qualname__}.{attr}", fn


def public_callables():
    done = set()
    for modname in MODULES:
        module = importlib.import_module(modname)
        names = ["main"] if modname == "streamlev.cli" else list(module.__all__)
        for name in names:
            obj = getattr(module, name)
            if id(obj) in done or not _own_streamlev(obj):
                continue
            done.add(id(obj))
            if inspect.isclass(obj):
                yield from class_members(obj)
            elif inspect.isfunction(obj):
                yield f"{modname}.{name}", obj


def test_every_public_signature_is_annotated():
    listed = list(public_callables())
    assert len(listed) > 100, f"the walk found only {len(listed)} public callables"  # the walk itself works
    missing = [m for name, fn in listed for m in missing_hints(name, fn)]
    assert not missing, "public signatures without type hints:\n" + "\n".join(missing)


def test_the_check_sees_a_missing_hint():
    def partial(a: int, b, *args, c: float = 0.0, **kw) -> None:
        pass

    def no_return(self, a: int):
        pass

    class Thing:
        def __init__(self, n) -> None:
            pass

        @property
        def size(self):
            return 0

    Thing.__module__ = "streamlev.fake"
    assert missing_hints("partial", partial) == ["partial: param b", "partial: param args", "partial: param kw"]
    assert missing_hints("no_return", no_return) == ["no_return: return"]
    found = {name.rsplit(".", 1)[1]: missing_hints(name, fn) for name, fn in class_members(Thing)}
    assert found["__init__"] == [f"{Thing.__module__}.{Thing.__qualname__}.__init__: param n"]
    assert found["size"] == [f"{Thing.__module__}.{Thing.__qualname__}.size: return"]
