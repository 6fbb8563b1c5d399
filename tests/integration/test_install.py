"""`make install` (cmake --install) and the systemd unit in docs/: the programs and the
PKCS#11 module land where the README and the unit say, and run from there."""
import configparser
import os
import subprocess
import tempfile

from conftest import BUILD, SOURCE_DIR as SOURCE


def test_install_puts_programs_and_module_where_the_readme_says():
    with tempfile.TemporaryDirectory(prefix="hsmd-install-") as prefix:
        p = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        for path in ("bin/hsmd", "bin/hsmctl"):
            assert os.access(os.path.join(prefix, path), os.X_OK), path
        module = os.path.join(prefix, "lib/libhsm_pkcs11.so")
        assert os.path.isfile(module)
        # The installed programs run on their own (no path into the build tree).
        out = subprocess.run([os.path.join(prefix, "bin/hsmd"), "--help"], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0 and "--config FILE" in out.stdout, out.stdout + out.stderr
        # The module loads and answers as a PKCS#11 module does.
        import PyKCS11
        lib = PyKCS11.PyKCS11Lib()
        lib.load(module)
        assert lib.getInfo().manufacturerID.strip() == "hsmd"
    with open(os.path.join(SOURCE, "README.md")) as f:
        readme = f.read()
    assert "M=/usr/local/lib/libhsm_pkcs11.so" in readme  # PREFIX's default, as installed


def test_systemd_unit_runs_the_installed_hsmd_with_what_it_needs():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(SOURCE, "docs/hsmd.service"))
    svc = unit["Service"]
    exe, *args = svc["ExecStart"].split()
    assert exe == "/usr/local/bin/hsmd" and args == ["--config", "/etc/hsmd.conf"]
    assert svc["User"] == "hsmd" and svc["StateDirectory"] == "hsmd"
    assert svc["LimitMEMLOCK"] == "infinity"  # the secure heap is locked
    assert svc["RestartPreventExitStatus"] == "2"  # a refused setting exits 2: no restart loop
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # The README's example configuration keeps its data where the unit's state directory is.
    with open(os.path.join(SOURCE, "README.md")) as f:
        assert "data_dir = /var/lib/hsmd" in f.read()
    # hsmd refuses a setting with exit status 2, which the unit does not restart on.
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "hsmd.conf")
        with open(conf, "w") as f:
            f.write("no_such_setting = 1\n")
        p = subprocess.run([os.path.join(BUILD, "hsmd"), "--config", conf], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2 and "no_such_setting" in p.stderr, p.stderr
