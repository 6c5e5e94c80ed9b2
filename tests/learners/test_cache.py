"""The user cache directory: which environment variable wins, and that it exists once asked for."""

from hffm_opt.learners.cache import cache_dir


def test_cache_dir_order_of_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HFFM_OPT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "hffm_opt" and cache_dir().is_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "hffm_opt" and cache_dir().is_dir()
    monkeypatch.setenv("HFFM_OPT_CACHE", str(tmp_path / "own" / "nested"))
    assert cache_dir() == tmp_path / "own" / "nested" and cache_dir().is_dir()
    monkeypatch.setenv("HFFM_OPT_CACHE", "")  # empty = unset
    assert cache_dir() == tmp_path / "xdg" / "hffm_opt"
