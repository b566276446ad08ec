"""Named archive queries: written once in SQLAlchemy Core, with bind parameters only.

Every campaign asks the archive the same few questions (which files make up this tile, which
single-epoch images fed it, what was observed last night, which earlier exposures can serve as
templates). Each question is one :class:`NamedQuery` in :data:`QUERIES`, with typed parameters
and a builder that returns a SQLAlchemy ``Select``. The same statement runs on SQLite,
PostgreSQL and Oracle (python-oracledb, the real DESDM); values are never formatted into SQL,
so :func:`compile_query` shows exactly what Oracle would be sent: placeholders like
``:tilename``.

Results are :class:`~skyops.manifest.Manifest` rows, one per archive file, with the file
columns first (``filename, path, compression, md5sum, filesize, filetype``) and the query's own
columns after; ``compression`` is ``''`` when the file is not compressed. Row order is fixed by
an ``ORDER BY`` on integers and on strings compared byte-wise (``COLLATE "C"`` on PostgreSQL,
SQLite's default), so SQLite and PostgreSQL return identical manifests.

The queries
-----------
``tile_geometry(tilename)``
    The tile's COADDTILE_GEOM row. Not files: returns a :class:`QueryTable` (a Manifest-shaped
    table without file columns; :meth:`ArchiveDB.tile_geometry` gives it as a dict).
``coadd_files(tilename, band, tag)``
    The tile's coadd images (COADD) and catalogs (CATALOG) in the band from the attempt(s)
    tagged ``tag`` in PROCTAG.
``se_sources(tilename, band, tag, zp_source='FGCM', zp_version='v1')``
    desmeds' "coaddsrc" list: the ``red_immask`` single-epoch images of the band whose
    footprint overlaps the tile (RA wrap at 0 handled), from attempts tagged ``tag`` and with a
    good zeropoint (``flag = 0``), plus each image's ``red_bkg``, ``red_segmap`` and
    ``psfex_model`` files from MISCFILE. Every row is one file; ``role`` is ``image``, ``bkg``,
    ``seg`` or ``psf`` and ``image_filename`` names the image the file belongs to, so the
    per-image grouping is recoverable (:func:`coaddsrc_rows`). Images missing a zeropoint are
    left out; an image missing an auxiliary file is listed without it.
``night_exposures(nite, program, bands)``
    The raw exposure files (EXPOSURE joined to DESFILE on filename) of one night and program
    in the listed bands (an expanding bind: ``IN (:bands_1, :bands_2)``).
``templates(expnum, ccdnum=None, min_days_separation=15, min_t_eff=0.3, tag=None)``
    Template candidates for difference imaging: ``red_immask`` CCD images of *earlier*
    exposures (at least ``min_days_separation`` days before) in the same band whose CCD
    footprint overlaps a CCD of the search exposure (all its CCDs, or ``ccdnum``), with
    ``exposure.t_eff >= min_t_eff`` and no BLACKLIST entry for (expnum, ccdnum). One row per
    (search CCD, template CCD); ``search_ccdnum`` says which. Candidates are first cut to the
    search exposure's bounding box (one index range) and only then paired with its CCDs, so
    the cost does not grow with the number of search CCDs. The search exposure's CCD
    footprints come from its own ``red_immask`` IMAGE rows, so it must have been processed.
    ``tag`` restricts both search and template images to tagged attempts (pass it when
    exposures were processed more than once, or rows repeat).
``raw_templates(expnum, min_days_separation=15, min_t_eff=0.3, max_separation_deg=2.2)``
    Templates that exist only as raw exposures (DESDM never processed them, so ``templates``
    cannot see them): earlier exposures in the search exposure's band with a raw file, the same
    date and t_eff cuts, no ``red_immask`` image, pointed within ``max_separation_deg`` of the
    search exposure (its EXPOSURE row: it need not have been processed). Their raw files
    (``ccdnum`` NULL) and the master calibrations of their nights (``cal_biascor``,
    ``cal_norm_dflatcor`` in the band, ``cal_bpm``; ``expnum`` NULL), ordered by nite,
    filetype, filename. Which of their CCDs overlap which search CCD is for the caller to say
    from the raw headers (``skyops.campaigns.gw.plan``); BLACKLIST is not applied here.
``files_by_name(names)``
    Any archived files by name. Oracle refuses IN lists over 1,000 items, so the names are
    split into expanding binds of at most :data:`IN_LIST_MAX` each (``filename IN (...) OR
    filename IN (...)``): plain bind variables, no temporary table (which would need DDL
    rights on DESDM) and no values in the SQL text. Beyond :data:`NAMES_PER_STATEMENT` names
    the list is sent as several statements and the rows merged in the same order.

Every file query also takes ``archive_name`` (default ``desar2home``): the FILE_ARCHIVE_INFO
archive whose paths are returned.

Schema owner and release prefix
-------------------------------
Queries are built against :func:`tables_for` ``(schema, prefix)``: ``schema='PROD'`` renders
``PROD.IMAGE``, ``prefix='Y3A2_'`` renders ``Y3A2_IMAGE`` (both may be combined). A platform
config's ``databases.archive_schema`` is parsed by :func:`parse_archive_schema`.
"""
from __future__ import annotations

import math
import re
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from skyops.archive import schema as _schema
from skyops.errors import InputError, QueryParameterError, UnknownQueryError
from skyops.manifest import FILE_COLUMNS, Manifest

#: Oracle's limit on the items of one IN list (ORA-01795).
IN_LIST_MAX = 1000
#: Names per statement in files_by_name: 30 IN lists, under SQLite's 32,766 and Oracle's
#: 65,535 bind-variable limits.
NAMES_PER_STATEMENT = 30 * IN_LIST_MAX
#: Upper bound on the Dec extent of one single-epoch CCD image, degrees. A DECam CCD spans
#: ~0.30 deg; this bound only turns "overlaps in Dec" into an index range on ``deccmin``
#: (an image overlapping [dmin, dmax] has deccmin in [dmin - extent, dmax]). It never changes
#: the result for images smaller than this.
MAX_CCD_EXTENT_DEG = 0.5
DEFAULT_ARCHIVE_NAME = "desar2home"
#: se_sources: auxiliary MISCFILE filetypes and the role each plays for desmeds.
SE_ROLES = {"red_bkg": "bkg", "red_segmap": "seg", "psfex_model": "psf"}
SE_IMAGE_FILETYPE = "red_immask"

_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_$#]*$")


# --------------------------------------------------------------------------------------------
# Tables under a schema owner / release prefix
# --------------------------------------------------------------------------------------------

class Tables:
    """The archive tables as one query sees them: ``t.image``, ``t.desfile`` ..."""

    def __init__(self, tables: dict[str, sa.Table], schema: str | None, prefix: str) -> None:
        self._tables = tables
        self.schema = schema
        self.prefix = prefix

    def __getattr__(self, name: str) -> sa.Table:
        try:
            return self.__dict__["_tables"][name]
        except KeyError:
            raise AttributeError(name) from None


def _identifier(value: str, what: str) -> str:
    if not _IDENT.match(value):
        raise InputError(
            f"archive {what} {value!r} is not a plain SQL identifier; expected letters, digits "
            f"and _ (e.g. PROD or Y3A2_)"
        )
    return value.lower()


@lru_cache(maxsize=32)
def tables_for(schema: str | None = None, prefix: str | None = None) -> Tables:
    """The archive tables under schema owner ``schema`` and/or table-name ``prefix``.

    Names are lower-cased so that they render unquoted (``PROD.Y3A2_IMAGE`` on Oracle).
    """
    schema = _identifier(schema, "schema") if schema else None
    prefix = _identifier(prefix, "table prefix") if prefix else ""
    if schema is None and not prefix:
        return Tables(dict(_schema.TABLES), None, "")
    md = sa.MetaData()
    tables = {name: t.to_metadata(md, schema=schema, name=prefix + name) for name, t in _schema.TABLES.items()}
    return Tables(tables, schema, prefix)


def parse_archive_schema(value: str | None) -> tuple[str | None, str | None]:
    """``databases.archive_schema`` -> (schema, prefix).

    ``PROD`` is a schema owner, ``Y3A2_`` (ends with ``_``) a release prefix, ``PROD.Y3A2_``
    both.
    """
    if not value:
        return None, None
    owner, _, rest = value.partition(".")
    if rest:
        return owner, rest
    return (None, value) if value.endswith("_") else (value, None)


# --------------------------------------------------------------------------------------------
# Byte-wise string ordering on every backend
# --------------------------------------------------------------------------------------------

class binary_order(FunctionElement):
    """``expr`` compared byte-wise in ORDER BY (PostgreSQL's collation may be locale-aware)."""

    inherit_cache = True
    name = "binary_order"


@compiles(binary_order)
def _binary_order_default(element: binary_order, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(binary_order, "postgresql")
def _binary_order_pg(element: binary_order, compiler: Any, **kw: Any) -> str:
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'


# --------------------------------------------------------------------------------------------
# Parameters and the registry
# --------------------------------------------------------------------------------------------

class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
_TYPES = ("str", "int", "float", "list[str]")


@dataclass(frozen=True)
class Param:
    """One parameter of a named query: its name, type, meaning and default.

    ``type`` is ``str``, ``int``, ``float`` or ``list[str]``; ``default=None`` makes the
    parameter optional, :data:`REQUIRED` (the default) mandatory.
    """

    name: str
    type: str
    help: str
    default: Any = REQUIRED

    def __post_init__(self) -> None:
        assert self.type in _TYPES, self.type

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """``expnum: int (search exposure number)`` -- used in listings and error messages."""
        return f"{self.name}: {self.type} ({self.help})"

    def coerce(self, query: str, value: Any) -> Any:
        """The value as this parameter's type; strings from a command line are converted."""
        if value is None and not self.required and self.default is None:
            return None
        bad = QueryParameterError(
            f"archive query {query!r}: parameter {self.name!r} expects {self.type} ({self.help}), "
            f"got {value!r} ({type(value).__name__})"
        )
        if self.type == "str":
            if isinstance(value, str):
                return value
            raise bad
        if self.type == "list[str]":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise bad
            if not value:
                raise QueryParameterError(
                    f"archive query {query!r}: parameter {self.name!r} expects a non-empty "
                    f"{self.type} ({self.help}), got an empty list"
                )
            return list(value)
        if isinstance(value, bool):
            raise bad
        if self.type == "int":
            if isinstance(value, int):
                return value
            if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
                return int(value)
            raise bad
        # float
        if isinstance(value, (int, float)):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value)
            except ValueError:
                raise bad from None
        else:
            raise bad
        if not math.isfinite(result):
            raise bad
        return result


Builder = Callable[[Tables, dict[str, Any]], sa.Select]


@dataclass(frozen=True)
class NamedQuery:
    """A named archive query: parameters, a statement builder, and how its rows are ordered.

    ``build(tables, params)`` returns the statement for validated ``params`` (optional
    parameters that are None may leave their condition out). ``binds(params)`` maps the params
    to bind values (default: the params that are not None). ``batches`` splits one call into
    several statements whose rows are merged and re-sorted with ``sort_key`` (files_by_name).
    """

    name: str
    description: str
    params: tuple[Param, ...]
    build: Builder
    columns: tuple[str, ...]
    files: bool = True
    binds: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    batches: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
    sort_key: Callable[[tuple[Any, ...]], Any] | None = None
    #: The few columns a terminal listing shows after the file name (``skyops archive query``).
    display: tuple[str, ...] = ()

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Checked and converted parameters, defaults filled in; or QueryParameterError."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise QueryParameterError(
                f"archive query {self.name!r}: unknown parameter {unknown[0]!r}; it takes: "
                f"{', '.join(known)}"
            )
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name not in params or params[p.name] is None:
                if p.required:
                    raise QueryParameterError(
                        f"archive query {self.name!r}: missing parameter {p.name!r} "
                        f"({p.type}: {p.help})"
                    )
                out[p.name] = p.default
                continue
            out[p.name] = p.coerce(self.name, params[p.name])
        return out

    def bind_values(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.binds is not None:
            return self.binds(params)
        return {k: v for k, v in params.items() if v is not None}

    def statement(self, params: dict[str, Any], tables: Tables | None = None) -> sa.Select:
        return self.build(tables or tables_for(), params)

    def signature(self) -> str:
        """``templates(expnum: int, ccdnum: int = None, ...)`` for listings."""
        parts = []
        for p in self.params:
            parts.append(f"{p.name}: {p.type}" if p.required else f"{p.name}: {p.type} = {p.default!r}")
        return f"{self.name}({', '.join(parts)})"


QUERIES: dict[str, NamedQuery] = {}


def _register(q: NamedQuery) -> NamedQuery:
    QUERIES[q.name] = q
    return q


def get_query(name: str) -> NamedQuery:
    """The registered query ``name``, or UnknownQueryError listing the known ones."""
    try:
        return QUERIES[name]
    except KeyError:
        raise UnknownQueryError(
            f"unknown archive query {name!r}; known queries: {', '.join(sorted(QUERIES))} "
            f"(list them with: skyops archive queries)"
        ) from None


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

def _bp(name: str, type_: Any = None, expanding: bool = False) -> sa.BindParameter:
    return sa.bindparam(name, type_=type_, expanding=expanding)


def _archive_param() -> Param:
    return Param("archive_name", "str", "FILE_ARCHIVE_INFO archive whose paths to return",
                 DEFAULT_ARCHIVE_NAME)


def _file_columns(t: Tables) -> list[sa.ColumnElement]:
    d, f = t.desfile, t.file_archive_info
    return [d.c.filename, f.c.path, d.c.compression, d.c.md5sum, d.c.filesize, d.c.filetype]


def _join_files(t: Tables, source: sa.FromClause, filename: sa.ColumnElement) -> sa.Join:
    """``source`` joined to its DESFILE row (by filename) and FILE_ARCHIVE_INFO location."""
    d, f = t.desfile, t.file_archive_info
    return source.join(d, d.c.filename == filename).join(
        f, sa.and_(f.c.desfile_id == d.c.id, f.c.archive_name == _bp("archive_name"))
    )


def ra_overlap(a: Any, b: Any) -> sa.ColumnElement[bool]:
    """Footprints ``a`` and ``b`` (racmin/racmax/crossra0 columns) overlap in RA.

    With ``crossra0 = 'Y'`` the footprint is [racmin, 360) + [0, racmax]; two footprints that
    both cross RA 0 always overlap in RA.
    """
    a_n, b_n = a.c.crossra0 == "N", b.c.crossra0 == "N"
    a_y, b_y = a.c.crossra0 == "Y", b.c.crossra0 == "Y"
    return sa.or_(
        sa.and_(a_n, b_n, a.c.racmin <= b.c.racmax, a.c.racmax >= b.c.racmin),
        sa.and_(a_y, b_n, sa.or_(b.c.racmax >= a.c.racmin, b.c.racmin <= a.c.racmax)),
        sa.and_(a_n, b_y, sa.or_(a.c.racmax >= b.c.racmin, a.c.racmin <= b.c.racmax)),
        sa.and_(a_y, b_y),
    )


def ccd_overlap(img: Any, region: Any) -> sa.ColumnElement[bool]:
    """CCD image ``img`` overlaps ``region`` (a tile or another CCD).

    The first two Dec terms are exact; the third is implied by them for any image smaller than
    :data:`MAX_CCD_EXTENT_DEG` and lets the ``(filetype, band, deccmin)`` index bound its range.
    """
    return sa.and_(
        img.c.deccmin <= region.c.deccmax,
        img.c.deccmax >= region.c.deccmin,
        img.c.deccmin >= region.c.deccmin - _bp("max_ccd_extent", sa.Double),
        ra_overlap(img, region),
    )


def _with_extent(params: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in params.items() if v is not None}
    out["max_ccd_extent"] = MAX_CCD_EXTENT_DEG
    return out


# --------------------------------------------------------------------------------------------
# The queries
# --------------------------------------------------------------------------------------------

_TILE_COLUMNS = tuple(c.name for c in _schema.coaddtile_geom.columns)


def _tile_geometry(t: Tables, p: dict[str, Any]) -> sa.Select:
    g = t.coaddtile_geom
    return sa.select(*[g.c[name] for name in _TILE_COLUMNS]).where(g.c.tilename == _bp("tilename"))


_register(NamedQuery(
    name="tile_geometry",
    description="The tile's COADDTILE_GEOM row (centre, corners, bounds, crossra0, WCS); no files.",
    params=(Param("tilename", "str", "DES tile name, e.g. DES0239+0216"),),
    build=_tile_geometry,
    columns=_TILE_COLUMNS,
    files=False,
    display=("tilename", "ra_cent", "dec_cent", "racmin", "racmax", "deccmin", "deccmax", "crossra0"),
))


def _tiles_in_box(t: Tables, p: dict[str, Any]) -> sa.Select:
    g = t.coaddtile_geom
    # RA ranges may wrap through 0 (ra_min > ra_max: 350 .. 10 deg)
    ra = sa.case((_bp("ra_min") <= _bp("ra_max"),
                  sa.and_(g.c.ra_cent >= _bp("ra_min"), g.c.ra_cent <= _bp("ra_max"))),
                 else_=sa.or_(g.c.ra_cent >= _bp("ra_min"), g.c.ra_cent <= _bp("ra_max")))
    return (sa.select(*[g.c[name] for name in _TILE_COLUMNS])
            .where(ra, g.c.dec_cent >= _bp("dec_min"), g.c.dec_cent <= _bp("dec_max"))
            .order_by(g.c.tilename))


_register(NamedQuery(
    name="tiles_in_box",
    description="COADDTILE_GEOM rows of the tiles whose centre lies in an RA/Dec box (RA may wrap through 0).",
    params=(Param("ra_min", "float", "RA lower bound, deg"), Param("ra_max", "float", "RA upper bound, deg"),
            Param("dec_min", "float", "Dec lower bound, deg"), Param("dec_max", "float", "Dec upper bound, deg")),
    build=_tiles_in_box,
    columns=_TILE_COLUMNS,
    files=False,
    display=("tilename", "ra_cent", "dec_cent"),
))


def _coadd_files(t: Tables, p: dict[str, Any]) -> sa.Select:
    pt = t.proctag
    branches = []
    for prod in (t.coadd, t.catalog):
        tagged = prod.join(pt, sa.and_(pt.c.pfw_attempt_id == prod.c.pfw_attempt_id, pt.c.tag == _bp("tag")))
        branches.append(
            sa.select(*_file_columns(t), prod.c.tilename, prod.c.band, prod.c.pfw_attempt_id)
            .select_from(_join_files(t, tagged, prod.c.filename))
            .where(prod.c.tilename == _bp("tilename"), prod.c.band == _bp("band"))
        )
    u = sa.union_all(*branches).subquery("coadd_files")
    return sa.select(*u.c).order_by(binary_order(u.c.filetype), binary_order(u.c.filename))


_register(NamedQuery(
    name="coadd_files",
    description="Coadd images (COADD) and catalogs (CATALOG) of a tile and band from the "
                "PROCTAG-tagged attempt.",
    params=(
        Param("tilename", "str", "DES tile name, e.g. DES0239+0216"),
        Param("band", "str", "filter band: g, r, i, z, Y or det"),
        Param("tag", "str", "PROCTAG tag of the coadd campaign, e.g. Y3A1_COADD"),
        _archive_param(),
    ),
    build=_coadd_files,
    columns=FILE_COLUMNS + ("tilename", "band", "pfw_attempt_id"),
    display=("filetype", "band", "filesize"),
))


def _se_images(t: Tables, name: str) -> sa.Subquery:
    """The tile's contributing red_immask images with their zeropoints (desmeds' coaddsrc).

    Built once per UNION branch on purpose: a CTE shared by both branches is materialised,
    and SQLite then builds a Bloom filter over all of FILE_ARCHIVE_INFO for every query.
    """
    g, j, z, pt = t.coaddtile_geom, t.image, t.zeropoint, t.proctag
    tile = (sa.select(g.c.racmin, g.c.racmax, g.c.deccmin, g.c.deccmax, g.c.crossra0)
            .where(g.c.tilename == _bp("tilename")).subquery(f"{name}_tile"))
    return (
        sa.select(j.c.filename.label("image_filename"), j.c.expnum, j.c.ccdnum, j.c.band,
                  j.c.pfw_attempt_id, z.c.mag_zero)
        .select_from(
            tile.join(j, ccd_overlap(j, tile))
            .join(pt, sa.and_(pt.c.pfw_attempt_id == j.c.pfw_attempt_id, pt.c.tag == _bp("tag")))
            .join(z, sa.and_(z.c.imagename == j.c.filename, z.c.source == _bp("zp_source"),
                             z.c.version == _bp("zp_version"), z.c.flag == 0))
        )
        .where(j.c.filetype == SE_IMAGE_FILETYPE, j.c.band == _bp("band"))
        .subquery(name)
    )


def _se_sources(t: Tables, p: dict[str, Any]) -> sa.Select:
    m = t.miscfile

    def own(src: sa.Subquery) -> list[sa.ColumnElement]:
        return [src.c.image_filename, src.c.expnum, src.c.ccdnum, src.c.band, src.c.mag_zero,
                src.c.pfw_attempt_id]

    img = _se_images(t, "src_image")
    images = (sa.select(*_file_columns(t), sa.literal("image", sa.String).label("role"), *own(img))
              .select_from(_join_files(t, img, img.c.image_filename)))
    aux = _se_images(t, "src_aux")
    aux_of = aux.join(m, sa.and_(
        m.c.pfw_attempt_id == aux.c.pfw_attempt_id, m.c.expnum == aux.c.expnum,
        m.c.ccdnum == aux.c.ccdnum, m.c.filetype.in_(list(SE_ROLES)),
    ))
    role = sa.case(SE_ROLES, value=m.c.filetype).label("role")
    auxiliaries = (sa.select(*_file_columns(t), role, *own(aux))
                   .select_from(_join_files(t, aux_of, m.c.filename)))
    u = sa.union_all(images, auxiliaries).subquery("se_files")
    return sa.select(*u.c).order_by(
        binary_order(u.c.image_filename), binary_order(u.c.role), binary_order(u.c.filename)
    )


_register(NamedQuery(
    name="se_sources",
    description="desmeds coaddsrc: red_immask images overlapping the tile (tagged attempt, "
                "good zeropoint) with their bkg/seg/psf files; one row per file, grouped by "
                "image_filename and role.",
    params=(
        Param("tilename", "str", "DES tile name, e.g. DES0239+0216"),
        Param("band", "str", "filter band: g, r, i, z or Y"),
        Param("tag", "str", "PROCTAG tag of the single-epoch campaign, e.g. Y3A1_FINALCUT"),
        Param("zp_source", "str", "ZEROPOINT.SOURCE to use", "FGCM"),
        Param("zp_version", "str", "ZEROPOINT.VERSION to use", "v1"),
        _archive_param(),
    ),
    build=_se_sources,
    columns=FILE_COLUMNS + ("role", "image_filename", "expnum", "ccdnum", "band", "mag_zero",
                            "pfw_attempt_id"),
    binds=_with_extent,
    display=("role", "expnum", "ccdnum", "mag_zero"),
))


def _night_exposures(t: Tables, p: dict[str, Any]) -> sa.Select:
    e = t.exposure
    return (
        sa.select(*_file_columns(t), e.c.expnum, e.c.nite, e.c.band, e.c.exptime, e.c.mjd_obs,
                  e.c.date_obs, e.c.program, e.c.field, e.c.object, e.c.ra_cent, e.c.dec_cent,
                  e.c.t_eff)
        .select_from(_join_files(t, e, e.c.filename))
        .where(e.c.nite == _bp("nite"), e.c.program == _bp("program"),
               e.c.band.in_(_bp("bands", expanding=True)))
        .order_by(e.c.expnum, binary_order(t.desfile.c.filename))
    )


_register(NamedQuery(
    name="night_exposures",
    description="Raw exposure files of one night and program in the given bands.",
    params=(
        Param("nite", "str", "observing night YYYYMMDD, e.g. 20170817"),
        Param("program", "str", "EXPOSURE.PROGRAM, e.g. survey, supernova, gw"),
        Param("bands", "list[str]", "bands, e.g. g,r,i"),
        _archive_param(),
    ),
    build=_night_exposures,
    columns=FILE_COLUMNS + ("expnum", "nite", "band", "exptime", "mjd_obs", "date_obs", "program",
                            "field", "object", "ra_cent", "dec_cent", "t_eff"),
    display=("expnum", "band", "exptime", "t_eff", "object"),
))


def _tagged(t: Tables, attempt_id: sa.ColumnElement) -> sa.ColumnElement[bool]:
    pt = t.proctag
    return attempt_id.in_(sa.select(pt.c.pfw_attempt_id).where(pt.c.tag == _bp("tag")))


def _ra_delta(ra: sa.ColumnElement, ra0: sa.ColumnElement) -> sa.ColumnElement:
    """``ra - ra0`` wrapped into [-180, 180] degrees (portable: no MOD on floats)."""
    d = ra - ra0
    return sa.case((d > 180.0, d - 360.0), (d < -180.0, d + 360.0), else_=d)


def _materialized(cte: sa.CTE) -> sa.CTE:
    """Evaluate ``cte`` once, before the rest is planned (SQLite >= 3.35, PostgreSQL >= 12)."""
    cte = cte.prefix_with("MATERIALIZED", dialect="postgresql")
    if sqlite3.sqlite_version_info >= (3, 35):
        cte = cte.prefix_with("MATERIALIZED", dialect="sqlite")
    return cte


def _templates(t: Tables, p: dict[str, Any]) -> sa.Select:
    """Three steps, so that no database scans a whole Dec stripe once per search CCD.

    ``search``: the search exposure's CCD footprints (with its band and date). ``sbox``: their
    bounding box, RA measured from one of its own CCDs so that RA 0 needs no special case.
    ``cand``: template CCDs inside that box (one index range on deccmin), date, t_eff and
    blacklist applied. Finally each candidate is paired with the search CCDs it overlaps.
    """
    s, se = t.image.alias("s"), t.exposure.alias("se")
    ti, te, bl = t.image.alias("ti"), t.exposure.alias("te"), t.blacklist
    search_where = [s.c.expnum == _bp("expnum"), s.c.filetype == SE_IMAGE_FILETYPE]
    if p.get("ccdnum") is not None:
        search_where.append(s.c.ccdnum == _bp("ccdnum"))
    if p.get("tag") is not None:
        search_where.append(_tagged(t, s.c.pfw_attempt_id))
    search = (
        sa.select(s.c.ccdnum.label("search_ccdnum"), s.c.racmin, s.c.racmax, s.c.deccmin,
                  s.c.deccmax, s.c.crossra0, se.c.band, se.c.mjd_obs)
        .select_from(s.join(se, se.c.expnum == s.c.expnum))
        .where(*search_where)
        .cte("search")
    )
    anchor = sa.select(sa.func.min(search.c.racmin).label("ra0")).cte("anchor")
    sbox = (
        sa.select(
            sa.func.min(anchor.c.ra0).label("ra0"),
            sa.func.min(_ra_delta(search.c.racmin, anchor.c.ra0)).label("dra_min"),
            sa.func.max(_ra_delta(search.c.racmax, anchor.c.ra0)).label("dra_max"),
            sa.func.min(search.c.deccmin).label("deccmin"),
            sa.func.max(search.c.deccmax).label("deccmax"),
            sa.func.min(search.c.band).label("band"),
            sa.func.min(search.c.mjd_obs).label("mjd_obs"),
        )
        .select_from(search.join(anchor, search.c.racmin >= anchor.c.ra0))  # ra0 = min: every row
        .cte("sbox")
    )
    cand_where = [
        ti.c.filetype == SE_IMAGE_FILETYPE,
        ti.c.deccmin >= sbox.c.deccmin - _bp("max_ccd_extent", sa.Double),
        ti.c.deccmin <= sbox.c.deccmax,
        ti.c.deccmax >= sbox.c.deccmin,
        _ra_delta(ti.c.racmin, sbox.c.ra0) <= sbox.c.dra_max,
        _ra_delta(ti.c.racmax, sbox.c.ra0) >= sbox.c.dra_min,
        te.c.mjd_obs <= sbox.c.mjd_obs - _bp("min_days_separation", sa.Double),
        te.c.t_eff >= _bp("min_t_eff", sa.Double),
        ~sa.exists().where(bl.c.expnum == ti.c.expnum, bl.c.ccdnum == ti.c.ccdnum),
    ]
    if p.get("tag") is not None:
        cand_where.append(_tagged(t, ti.c.pfw_attempt_id))
    cand = _materialized(
        sa.select(ti.c.filename, ti.c.expnum, ti.c.ccdnum, ti.c.band, ti.c.nite, ti.c.pfw_attempt_id,
                  ti.c.racmin, ti.c.racmax, ti.c.deccmin, ti.c.deccmax, ti.c.crossra0,
                  te.c.mjd_obs, te.c.t_eff)
        .select_from(sbox.join(ti, ti.c.band == sbox.c.band).join(te, te.c.expnum == ti.c.expnum))
        .where(*cand_where)
        .cte("cand")
    )
    pairs = cand.join(search, ccd_overlap(cand, search))
    return (
        sa.select(*_file_columns(t), search.c.search_ccdnum, cand.c.expnum, cand.c.ccdnum, cand.c.band,
                  cand.c.nite, cand.c.mjd_obs, cand.c.t_eff, cand.c.pfw_attempt_id)
        .select_from(_join_files(t, pairs, cand.c.filename))
        .order_by(search.c.search_ccdnum, cand.c.expnum, cand.c.ccdnum, binary_order(cand.c.filename))
    )


_register(NamedQuery(
    name="templates",
    description="Template CCD images for difference imaging: earlier exposures, same band, "
                "overlapping the search exposure's CCDs, t_eff cut, blacklist applied.",
    params=(
        Param("expnum", "int", "search exposure number, e.g. 668439"),
        Param("ccdnum", "int", "only this search CCD (default: all)", None),
        Param("min_days_separation", "float", "templates at least this many days earlier", 15.0),
        Param("min_t_eff", "float", "minimum EXPOSURE.T_EFF of a template", 0.3),
        Param("tag", "str", "only images of attempts with this PROCTAG tag (default: any)", None),
        _archive_param(),
    ),
    build=_templates,
    columns=FILE_COLUMNS + ("search_ccdnum", "expnum", "ccdnum", "band", "nite", "mjd_obs", "t_eff",
                            "pfw_attempt_id"),
    binds=_with_extent,
    display=("search_ccdnum", "expnum", "ccdnum", "nite", "t_eff"),
))


def _name_chunks(names: list[str]) -> list[list[str]]:
    return [names[i:i + IN_LIST_MAX] for i in range(0, len(names), IN_LIST_MAX)]


def _files_by_name(t: Tables, p: dict[str, Any]) -> sa.Select:
    d, f = t.desfile, t.file_archive_info
    n_lists = max(1, len(_name_chunks(p["names"])))
    matches = [d.c.filename.in_(_bp(f"names_{i}", expanding=True)) for i in range(n_lists)]
    located = d.join(f, sa.and_(f.c.desfile_id == d.c.id, f.c.archive_name == _bp("archive_name")))
    return (
        sa.select(*_file_columns(t), d.c.pfw_attempt_id)
        .select_from(located)
        .where(sa.or_(*matches))
        .order_by(binary_order(d.c.filename), binary_order(sa.func.coalesce(d.c.compression, "")))
    )


def _files_by_name_binds(p: dict[str, Any]) -> dict[str, Any]:
    binds = {"archive_name": p["archive_name"]}
    for i, chunk in enumerate(_name_chunks(p["names"])):
        binds[f"names_{i}"] = chunk
    return binds


def _files_by_name_batches(p: dict[str, Any]) -> list[dict[str, Any]]:
    names = sorted(set(p["names"]))
    return [dict(p, names=names[i:i + NAMES_PER_STATEMENT]) for i in range(0, len(names), NAMES_PER_STATEMENT)]


_register(NamedQuery(
    name="files_by_name",
    description="Archived files by name (any number; IN lists of <= 1000 binds each).",
    params=(
        Param("names", "list[str]", "file names without compression suffix"),
        _archive_param(),
    ),
    build=_files_by_name,
    columns=FILE_COLUMNS + ("pfw_attempt_id",),
    binds=_files_by_name_binds,
    batches=_files_by_name_batches,
    sort_key=lambda row: (row[0], row[2] or ""),
    display=("filetype", "filesize", "path"),
))


# --------------------------------------------------------------------------------------------
# Single-epoch inputs of one exposure (the GW nightly campaign's SE step)
# --------------------------------------------------------------------------------------------

#: Calibration filetypes a night's detrending needs, in MISCFILE with nite, band and ccdnum.
CALIBRATION_FILETYPES = ("cal_biascor", "cal_norm_dflatcor", "cal_bpm")


def _raw_exposure(t: Tables, p: dict[str, Any]) -> sa.Select:
    e = t.exposure
    return (
        sa.select(*_file_columns(t), e.c.expnum, e.c.nite, e.c.band, e.c.exptime, e.c.mjd_obs,
                  e.c.program, e.c.ra_cent, e.c.dec_cent)
        .select_from(_join_files(t, e, e.c.filename))
        .where(e.c.expnum == _bp("expnum"))
        .order_by(binary_order(t.desfile.c.filename))
    )


_register(NamedQuery(
    name="raw_exposure",
    description="The raw file of one exposure, with its EXPOSURE columns.",
    params=(Param("expnum", "int", "exposure number, e.g. 668439"), _archive_param()),
    build=_raw_exposure,
    columns=FILE_COLUMNS + ("expnum", "nite", "band", "exptime", "mjd_obs", "program", "ra_cent", "dec_cent"),
    display=("expnum", "nite", "band", "exptime"),
))


def _night_calibrations(t: Tables, p: dict[str, Any]) -> sa.Select:
    m = t.miscfile
    return (
        sa.select(*_file_columns(t), m.c.ccdnum, m.c.band, m.c.nite)
        .select_from(_join_files(t, m, m.c.filename))
        .where(m.c.nite == _bp("nite"), m.c.filetype.in_(_bp("filetypes", expanding=True)),
               sa.or_(m.c.band.is_(None), m.c.band == _bp("band")))
        .order_by(m.c.ccdnum, binary_order(m.c.filetype))
    )


_register(NamedQuery(
    name="night_calibrations",
    description="A night's master bias, dome flat (in the band) and bad-pixel map per CCD.",
    params=(Param("nite", "str", "observing night YYYYMMDD"), Param("band", "str", "filter band of the flats"),
            _archive_param()),
    build=_night_calibrations,
    binds=lambda p: {"nite": p["nite"], "band": p["band"], "archive_name": p["archive_name"],
                     "filetypes": list(CALIBRATION_FILETYPES)},
    columns=FILE_COLUMNS + ("ccdnum", "band", "nite"),
    display=("filetype", "ccdnum", "band"),
))


#: raw_templates: (pi/180)^2 / 2, so that 1 - dec^2 (deg) * this is a lower bound of cos(dec).
_HALF_RAD2 = (math.pi / 180.0) ** 2 / 2.0


def _raw_templates(t: Tables, p: dict[str, Any]) -> sa.Select:
    """Raw-only template exposures near the search pointing, and their nights' calibrations.

    ``search``: the search exposure's band, date and pointing (its EXPOSURE row: it need not
    have been processed). ``cand``: earlier exposures in the band with a raw file, the t_eff
    cut, no red_immask image, and a pointing within ``max_separation_deg``: in Dec exactly, in
    RA through ``|dRA| (1 - dec^2/2) <= max_separation_deg`` -- ``1 - x^2/2 <= cos x``, so no
    template is lost, and no trigonometry is needed in SQL (SQLite may lack it). Their raw
    files, then the MISCFILE calibrations of their nights, in one manifest.
    """
    se, te, img, m = t.exposure.alias("se"), t.exposure.alias("te"), t.image, t.miscfile
    search = (sa.select(se.c.band, se.c.mjd_obs, se.c.ra_cent, se.c.dec_cent)
              .where(se.c.expnum == _bp("expnum")).cte("search"))
    max_sep = _bp("max_separation_deg", sa.Double)
    cos_low = 1.0 - search.c.dec_cent * search.c.dec_cent * _bp("half_rad2", sa.Double)
    dra = _ra_delta(te.c.ra_cent, search.c.ra_cent)
    cand = (
        sa.select(te.c.expnum, te.c.filename, te.c.nite, te.c.band, te.c.mjd_obs, te.c.t_eff, te.c.ra_cent,
                  te.c.dec_cent)
        .select_from(search.join(te, te.c.band == search.c.band))
        .where(
            te.c.filename.is_not(None),
            te.c.mjd_obs <= search.c.mjd_obs - _bp("min_days_separation", sa.Double),
            te.c.t_eff >= _bp("min_t_eff", sa.Double),
            te.c.dec_cent >= search.c.dec_cent - max_sep,
            te.c.dec_cent <= search.c.dec_cent + max_sep,
            sa.or_(cos_low <= 0.0, sa.func.abs(dra) * cos_low <= max_sep),
            ~sa.exists().where(img.c.expnum == te.c.expnum, img.c.filetype == _bp("image_filetype")),
        )
        .cte("cand")
    )
    raws = (
        sa.select(*_file_columns(t), cand.c.expnum, cand.c.nite, cand.c.band,
                  sa.cast(sa.null(), sa.Integer).label("ccdnum"), cand.c.mjd_obs, cand.c.t_eff, cand.c.ra_cent,
                  cand.c.dec_cent)
        .select_from(_join_files(t, cand, cand.c.filename))
    )
    cals = (
        sa.select(*_file_columns(t), sa.cast(sa.null(), sa.Integer).label("expnum"), m.c.nite, m.c.band,
                  m.c.ccdnum, *(sa.cast(sa.null(), sa.Double).label(c)
                                for c in ("mjd_obs", "t_eff", "ra_cent", "dec_cent")))
        .select_from(_join_files(t, m, m.c.filename))
        .where(m.c.nite.in_(sa.select(cand.c.nite)), m.c.filetype.in_(_bp("filetypes", expanding=True)),
               sa.or_(m.c.band.is_(None), m.c.band == sa.select(search.c.band).scalar_subquery()))
    )
    u = sa.union_all(raws, cals).subquery("u")
    return sa.select(*u.c).order_by(binary_order(u.c.nite), binary_order(u.c.filetype),
                                    binary_order(u.c.filename))


_register(NamedQuery(
    name="raw_templates",
    description="Template exposures that exist only raw (no red_immask): earlier, same band, near the "
                "search pointing, t_eff cut; their raw files and their nights' calibrations.",
    params=(
        Param("expnum", "int", "search exposure number, e.g. 668439"),
        Param("min_days_separation", "float", "templates at least this many days earlier", 15.0),
        Param("min_t_eff", "float", "minimum EXPOSURE.T_EFF of a template", 0.3),
        Param("max_separation_deg", "float", "pointings at most this far apart (DECam: 2.2 deg, two field radii)",
              2.2),
        _archive_param(),
    ),
    build=_raw_templates,
    binds=lambda p: {**{k: v for k, v in p.items() if v is not None}, "half_rad2": _HALF_RAD2,
                     "image_filetype": SE_IMAGE_FILETYPE, "filetypes": list(CALIBRATION_FILETYPES)},
    columns=FILE_COLUMNS + ("expnum", "nite", "band", "ccdnum", "mjd_obs", "t_eff", "ra_cent", "dec_cent"),
    display=("expnum", "nite", "ccdnum", "t_eff"),
))


def _reference_catalog(t: Tables, p: dict[str, Any]) -> sa.Select:
    c = t.catalog
    return (
        sa.select(*_file_columns(t), c.c.objects)
        .select_from(_join_files(t, c, c.c.filename))
        .where(c.c.filetype == _bp("filetype"))
        .order_by(binary_order(c.c.filename))
    )


_register(NamedQuery(
    name="reference_catalog",
    description="The astrometric/photometric reference catalog(s) (GAIA-like) in CATALOG.",
    params=(Param("filetype", "str", "CATALOG.FILETYPE of the reference catalog", "cal_refcat"),
            _archive_param()),
    build=_reference_catalog,
    columns=FILE_COLUMNS + ("objects",),
    display=("objects", "path"),
))


# --------------------------------------------------------------------------------------------
# Results, compilation
# --------------------------------------------------------------------------------------------

class QueryTable(Manifest):
    """A Manifest-shaped result whose rows are not files (``tile_geometry``).

    It writes the same JSON as a Manifest, but staging cannot use it: it has no file columns.
    """

    def __post_init__(self) -> None:  # no file-column check: these rows are not files
        pass


def make_result(query: NamedQuery, columns: Iterable[str], rows: list[tuple[Any, ...]],
                params: dict[str, Any]) -> Manifest:
    """Rows as a Manifest (``compression`` None -> ``''``) or, for non-file queries, a QueryTable."""
    columns = list(columns)
    if not query.files:
        return QueryTable(columns=columns, rows=rows, query=query.name, params=params)
    ci = columns.index("compression")
    fixed = [r if r[ci] is not None else r[:ci] + ("",) + r[ci + 1:] for r in rows]
    return Manifest(columns=columns, rows=fixed, query=query.name, params=params)


def plan(name: str, params: dict[str, Any], schema: str | None = None,
         prefix: str | None = None) -> tuple[NamedQuery, dict[str, Any], list[tuple[sa.Select, dict[str, Any]]]]:
    """Validate ``params`` for query ``name``; return it, the params and (statement, binds) pairs."""
    query = get_query(name)
    p = query.validate(params)
    tables = tables_for(schema, prefix)
    parts = query.batches(p) if query.batches else [p]
    return query, p, [(query.statement(part, tables), query.bind_values(part)) for part in parts]


_DIALECTS = ("oracle", "postgresql", "sqlite")


def _dialect(name: str) -> sa.engine.Dialect:
    if name == "oracle":
        from sqlalchemy.dialects.oracle import oracledb

        return oracledb.dialect()
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import psycopg2

        return psycopg2.dialect()
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import pysqlite

        return pysqlite.dialect()
    raise InputError(f"cannot compile for dialect {name!r}; expected one of: {', '.join(_DIALECTS)}")


def compile_query(name: str, dialect: str = "oracle", schema: str | None = None,
                  prefix: str | None = None, **params: Any) -> str:
    """The SQL that query ``name`` sends for ``params`` on ``dialect``, with bind placeholders.

    Expanding lists are rendered as their individual binds (``:bands_1, :bands_2``), as the
    driver would receive them; values never appear in the text. For files_by_name beyond
    :data:`NAMES_PER_STATEMENT` names, the statements are joined with ``;\\n``.
    """
    _query, _p, parts = plan(name, params, schema, prefix)
    d = _dialect(dialect)
    out = []
    for stmt, binds in parts:
        compiled = stmt.params(**binds).compile(dialect=d, compile_kwargs={"render_postcompile": True})
        out.append(str(compiled))
    return ";\n".join(out)


# --------------------------------------------------------------------------------------------
# desmeds' coaddsrc shape
# --------------------------------------------------------------------------------------------

def coaddsrc_rows(manifest: Manifest) -> list[dict[str, Any]]:
    """se_sources rows regrouped as desmeds' coaddsrc list: one dict per image.

    Keys: ``image_filename, image_path, image_compression, bkg_filename, bkg_path, seg_filename,
    seg_path, psf_filename, psf_path, expnum, ccdnum, band, mag_zero, pfw_attempt_id``; a
    missing auxiliary file gives None.
    """
    if manifest.query != "se_sources":
        raise InputError(f"coaddsrc_rows needs an se_sources manifest, got one from {manifest.query!r}")
    out: dict[str, dict[str, Any]] = {}
    for rec in manifest.records():
        row = out.setdefault(rec["image_filename"], {
            "image_filename": rec["image_filename"], "image_path": None, "image_compression": None,
            **{f"{r}_{k}": None for r in ("bkg", "seg", "psf") for k in ("filename", "path")},
            "expnum": rec["expnum"], "ccdnum": rec["ccdnum"], "band": rec["band"],
            "mag_zero": rec["mag_zero"], "pfw_attempt_id": rec["pfw_attempt_id"],
        })
        role = rec["role"]
        row[f"{role}_filename"] = rec["filename"]
        row[f"{role}_path"] = rec["path"]
        if role == "image":
            row["image_compression"] = rec["compression"]
    return list(out.values())
