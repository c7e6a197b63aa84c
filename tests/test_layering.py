"""Imports go one way: each module imports project modules from lower layers
only, at its top (no project import hidden inside a function to dodge a
circle), and no helper imports a script. A new module must be placed in a
layer here, which is the point: someone decides where it sits."""
import ast

from conftest import ROOT

LAYERS = [
    {"helper_flags"},                                         # flags and names, without torch
    {"models", "helper_files", "helper_losses", "helper_augment", "helper_explore",   # leaves
     "helper_schedule", "helper_dist"},
    {"helper_data", "helper_report", "helper_features"},      # data; grids and pages; feature scores
    {"helper_plot", "helper_tensorboard", "helper_checkpoint"},  # plots, TensorBoard; configs, checkpoints
    {"helper_eval", "helper_health"},                         # metrics and health
    {"helper_train"},                                         # the lecture's loop
    {"helper_cli", "bench_gpu"},                              # command line -> train_gan; GPU checks
    {"train_mnist_gan", "train_celeba_dcgan"},                # the two training scripts
    {"generate", "evaluate", "ablate", "bench"},              # tools over trained runs
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
# The one import allowed inside a function: a training script parses its flags
# first (helper_flags, no torch), so --help and a mistyped flag answer at once.
DEFERRED = {("train_mnist_gan", "helper_cli"), ("train_celeba_dcgan", "helper_cli")}


def project_imports(tree, modules):
    """(module imported, line, whether at the top level) for imports of project modules."""
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        for name in names:
            if name in modules:
                yield name, node.lineno, id(node) in top


def test_every_module_has_a_layer():
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert modules - LAYER.keys() == set(), "place new modules in LAYERS"


def test_imports_go_down_and_sit_at_the_top():
    modules = {p.stem for p in ROOT.glob("*.py")}
    problems = []
    for path in sorted(ROOT.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, line, at_top in project_imports(tree, modules):
            where = f"{path.name}:{line} imports {name}"
            if not at_top and (path.stem, name) not in DEFERRED:
                problems.append(f"{where} inside a function or block")
            if LAYER[name] >= LAYER[path.stem]:
                problems.append(f"{where}, which is not in a lower layer")
    assert not problems, "\n".join(problems)


TOOLS = ("generate", "evaluate", "ablate")   # they open trained runs: the checkpoint format is their contract


def imported_closure(module, modules):
    """Every project module that importing `module` loads, itself excluded."""
    seen, todo = set(), [module]
    while todo:
        tree = ast.parse((ROOT / f"{todo.pop()}.py").read_text())
        for name, _, _ in project_imports(tree, modules):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen - {module}


def test_tools_never_load_the_loop_or_the_command_line():
    modules = {p.stem for p in ROOT.glob("*.py")}
    for tool in TOOLS:
        loaded = imported_closure(tool, modules)
        assert "helper_checkpoint" in loaded, tool
        assert not loaded & {"helper_train", "helper_cli"}, f"{tool} loads {sorted(loaded & {'helper_train', 'helper_cli'})}"
