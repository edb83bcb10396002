"""Placement on PostgreSQL in fewer, simpler statements: 0009's function parsed the
write's JSON again to number its users and groups, read the groups' rooms and the users'
rooms in one statement of many parts, and always ran an INSERT and a lock of the rooms,
so that it cost the database more than the rest of the write. Here the writer gives the
rows already numbered (``store/writes.py``); the function reads the groups' rooms with
a free place and their last in one simple statement, fetches a user's room only when
that read did not hold it, and opens or locks rooms only when the write opens or
changes any. It locks the users' rows first, then the groups': a write whose users all
keep their city and segment (and so their rooms) takes no group's lock and reads no
group's rooms. The rule is 0009's; Python's placement (``store/rooms.py``) takes its
locks in the same new order.

Revision ID: 0010
Revises: 0009
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Arguments: the placement, a JSON object of arrays: the rows' users (each once), and per
# row the number of its user among them, the number of its group (null: no city) and its
# city as written; the groups (city key and segment) in the order of their advisory lock
# keys, and those keys. Then the room size.
# Returns one row per given row (its position from 1, its room, the room's city as its
# first member wrote it and its members after the write), then one per stored user among
# them (position NULL: their segment and room before it).
#
# The rooms read are numbered: first the groups' rooms with a free place and their last,
# by group and ordinal, then any other room a user is in. Each group keeps its rooms with
# a free place as a list by ordinal (free_head, next_free), so that a row finds its room
# in constant time in a write of any size.
PLACE_IN_ROOMS = """
CREATE FUNCTION place_in_rooms(placement json, room_size integer)
RETURNS TABLE (
    "position" bigint, user_id varchar, cluster integer,
    room_id varchar, room_city varchar, room_members integer
) LANGUAGE plpgsql
-- Its statements' plans made once per connection: they look rows up by key, and their
-- arrays' lengths, which only a plan made for each call would know, change nothing in
-- them (PostgreSQL would otherwise plan them again on every call, as they estimate
-- cheaper for a few rows than the plan for any number).
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    -- The placement's arrays (one JSON document: a driver adapts one string for less
    -- than seven arrays).
    user_ids varchar[]; row_user integer[]; row_group integer[]; row_city varchar[];
    group_keys varchar[]; group_segments integer[]; lock_keys bigint[];
    row_count integer; group_count integer;
    -- Each row's room after it, and each user's as the rows are placed.
    row_room integer[]; user_room integer[];
    -- The stored users among them: their number, id, segment and room before the write,
    -- the number of their city and segment among the groups, their room's city and
    -- members as read (NULL: none, or one this statement cannot see yet), and the number
    -- of that room among the rooms read.
    stored_user integer[]; stored_ids varchar[]; stored_clusters integer[];
    stored_room_ids varchar[]; stored_group integer[]; stored_room_cities varchar[];
    stored_members integer[]; stored_room integer[]; missing boolean;
    -- Each user's stored row among them, and whether any of their rows takes them out
    -- of their room; the groups such a row places into, whose locks the write takes.
    user_stored integer[]; user_moves boolean[]; needed boolean[];
    -- Of each group: its last ordinal, and the first of its rooms with a free place.
    group_last integer[]; free_head integer[];
    -- The rooms read, then those opened: each one's group (NULL: none of the rows'),
    -- ordinal, city and members (as read, and as placed), and the next room of its group
    -- with a free place.
    room_ids varchar[]; room_group integer[]; room_ordinal integer[]; room_cities varchar[];
    read_count integer[]; room_count integer[]; next_free integer[]; listed boolean[];
    rooms_read integer;
    this_user integer; this_group integer; held integer; joined integer; earlier integer;
BEGIN
    SELECT * INTO user_ids, row_user, row_group, row_city, group_keys, group_segments,
        lock_keys
    FROM json_to_record(placement) AS p(user_ids varchar[], row_user integer[],
        row_group integer[], row_city varchar[], group_keys varchar[],
        group_segments integer[], lock_keys bigint[]);
    row_count := coalesce(array_length(row_user, 1), 0);
    group_count := coalesce(array_length(group_keys, 1), 0);

    -- The stored users, their rows locked in the order of their ids, as every write
    -- locks them first (each one looked up by its key, in that order), with their rooms.
    SELECT array_agg(u.n), array_agg(a.user_id), array_agg(a.cluster), array_agg(a.room_id),
        array_agg(g.n), array_agg(r.city), array_agg(r.members)
    INTO stored_user, stored_ids, stored_clusters, stored_room_ids, stored_group,
        stored_room_cities, stored_members
    FROM (SELECT * FROM unnest(user_ids) WITH ORDINALITY AS u(user_id, n)
        ORDER BY u.user_id) AS u
    CROSS JOIN LATERAL (SELECT a.user_id, a.cluster, a.room_id, a.city_key FROM assignments a
        WHERE a.user_id = u.user_id FOR UPDATE) AS a
    LEFT JOIN unnest(group_keys, group_segments) WITH ORDINALITY AS g(city_key, segment, n)
        ON g.city_key = a.city_key AND g.segment = a.cluster
    LEFT JOIN rooms r ON r.id = a.room_id;

    -- A user whose rows all keep their city and segment keeps their room: the write
    -- changes no room of theirs, and needs no group's lock for them.
    user_stored := array_fill(NULL::integer, ARRAY[coalesce(array_length(user_ids, 1), 0)]);
    user_moves := array_fill(false, ARRAY[coalesce(array_length(user_ids, 1), 0)]);
    FOR k IN 1 .. coalesce(array_length(stored_user, 1), 0) LOOP
        user_stored[stored_user[k]] := k;
    END LOOP;
    FOR i IN 1 .. row_count LOOP
        this_user := row_user[i];
        held := user_stored[this_user];
        IF NOT coalesce(CASE WHEN stored_room_ids[held] IS NULL THEN row_group[i] IS NULL
            ELSE stored_members[held] IS NOT NULL AND row_group[i] = stored_group[held] END,
            false)
        THEN
            user_moves[this_user] := true;
        END IF;
    END LOOP;
    needed := array_fill(false, ARRAY[group_count]);
    FOR i IN 1 .. row_count LOOP
        IF user_moves[row_user[i]] AND row_group[i] IS NOT NULL THEN
            needed[row_group[i]] := true;
        END IF;
    END LOOP;
    IF NOT true = ANY(user_moves) THEN
        RETURN QUERY
        SELECT p.n, NULL::varchar, NULL::integer, stored_room_ids[user_stored[p.this_user]],
            stored_room_cities[user_stored[p.this_user]], stored_members[user_stored[p.this_user]]
        FROM unnest(row_user) WITH ORDINALITY AS p(this_user, n)
        UNION ALL
        SELECT NULL::bigint, s.user_id, s.cluster, s.room_id, NULL::varchar, NULL::integer
        FROM unnest(stored_ids, stored_clusters, stored_room_ids) AS s(user_id, cluster, room_id);
        RETURN;
    END IF;

    PERFORM pg_advisory_xact_lock(k.key)
    FROM unnest(lock_keys, needed) WITH ORDINALITY AS k(key, needed, n)
    WHERE k.needed ORDER BY k.n;

    -- The groups' rooms with a free place, and their last, by group and ordinal (read
    -- after the groups' locks: no other write places in them until this one commits).
    SELECT coalesce(array_agg(r.id), '{}'), coalesce(array_agg(r.n), '{}'),
        coalesce(array_agg(r.ordinal), '{}'), coalesce(array_agg(r.city), '{}'),
        coalesce(array_agg(r.members), '{}')
    INTO room_ids, room_group, room_ordinal, room_cities, read_count
    FROM (SELECT r.id, g.n, r.ordinal, r.city, r.members
        FROM (SELECT g.*, (SELECT max(l.ordinal) FROM rooms l
                WHERE l.city_key = g.city_key AND l.segment = g.segment) AS last
            FROM unnest(group_keys, group_segments, needed)
                WITH ORDINALITY AS g(city_key, segment, needed, n)
            WHERE g.needed) AS g
        JOIN rooms r ON r.city_key = g.city_key AND r.segment = g.segment
            AND (r.members < room_size OR r.ordinal = g.last)
        ORDER BY g.n, r.ordinal) AS r;
    -- Then the stored users' rooms: each one's number among those, and any other room
    -- (a full one of the groups, or one of another group) read after them, again: the
    -- users' statement read them before the groups' locks, when a placement in flight
    -- could still change their counts.
    FOR pass IN 1 .. 2 LOOP
        SELECT array_agg(k.n ORDER BY s.i),
            coalesce(bool_or(s.id IS NOT NULL AND k.n IS NULL), false)
        INTO stored_room, missing
        FROM unnest(stored_room_ids) WITH ORDINALITY AS s(id, i)
        LEFT JOIN unnest(room_ids) WITH ORDINALITY AS k(id, n) ON k.id = s.id;
        EXIT WHEN NOT missing OR pass = 2;
        SELECT room_ids || array_agg(r.id), room_group || array_agg(g.n),
            room_ordinal || array_agg(r.ordinal), room_cities || array_agg(r.city),
            read_count || array_agg(r.members)
        INTO room_ids, room_group, room_ordinal, room_cities, read_count
        FROM rooms r
        LEFT JOIN unnest(group_keys, group_segments) WITH ORDINALITY AS g(city_key, segment, n)
            ON g.city_key = r.city_key AND g.segment = r.segment
        WHERE r.id IN (SELECT s.id FROM unnest(stored_room_ids, stored_room) AS s(id, n)
            WHERE s.n IS NULL);
    END LOOP;
    rooms_read := coalesce(array_length(room_ids, 1), 0);
    room_count := read_count;

    user_room := array_fill(NULL::integer, ARRAY[coalesce(array_length(user_ids, 1), 0)]);
    FOR i IN 1 .. coalesce(array_length(stored_user, 1), 0) LOOP
        user_room[stored_user[i]] := stored_room[i];
    END LOOP;
    free_head := array_fill(NULL::integer, ARRAY[group_count]);
    group_last := array_fill(0, ARRAY[group_count]);
    next_free := array_fill(NULL::integer, ARRAY[rooms_read]);
    listed := array_fill(false, ARRAY[rooms_read]);
    FOR room IN REVERSE rooms_read .. 1 LOOP
        this_group := room_group[room];
        CONTINUE WHEN this_group IS NULL;
        group_last[this_group] := greatest(group_last[this_group], room_ordinal[room]);
        -- (the rooms with a free place come first, in order: a full one is not listed)
        IF room_count[room] < room_size THEN
            next_free[room] := free_head[this_group];
            free_head[this_group] := room;
            listed[room] := true;
        END IF;
    END LOOP;

    row_room := array_fill(NULL::integer, ARRAY[row_count]);
    FOR i IN 1 .. row_count LOOP
        this_user := row_user[i];
        this_group := row_group[i];
        held := user_room[this_user];
        IF held IS NOT NULL AND room_group[held] = this_group THEN
            row_room[i] := held;  -- the same city and segment: the same room
            CONTINUE;
        END IF;
        IF held IS NOT NULL THEN  -- leaves it: a free place, listed by ordinal
            room_count[held] := room_count[held] - 1;
            IF room_group[held] IS NOT NULL AND NOT listed[held] THEN
                earlier := NULL;
                joined := free_head[room_group[held]];
                WHILE joined IS NOT NULL AND room_ordinal[joined] < room_ordinal[held] LOOP
                    earlier := joined;
                    joined := next_free[joined];
                END LOOP;
                next_free[held] := joined;
                IF earlier IS NULL THEN
                    free_head[room_group[held]] := held;
                ELSE
                    next_free[earlier] := held;
                END IF;
                listed[held] := true;
            END IF;
        END IF;
        joined := NULL;
        IF this_group IS NOT NULL THEN  -- the first room with a free place, or a new one
            joined := free_head[this_group];
            IF joined IS NULL THEN
                joined := coalesce(array_length(room_ids, 1), 0) + 1;
                group_last[this_group] := group_last[this_group] + 1;
                -- cities.room_id: madrid-3, madrid-3-2, ...
                room_ids[joined] := group_keys[this_group] || '-' || group_segments[this_group]
                    || CASE WHEN group_last[this_group] = 1 THEN ''
                        ELSE '-' || group_last[this_group] END;
                room_ordinal[joined] := group_last[this_group];
                room_group[joined] := this_group;
                room_cities[joined] := row_city[i];
                room_count[joined] := 0;
                next_free[joined] := NULL;
                free_head[this_group] := joined;
                listed[joined] := true;
            END IF;
            room_count[joined] := room_count[joined] + 1;
            IF room_count[joined] >= room_size THEN
                free_head[this_group] := next_free[joined];
                listed[joined] := false;
            END IF;
        END IF;
        row_room[i] := joined;
        user_room[this_user] := joined;
    END LOOP;

    IF coalesce(array_length(room_ids, 1), 0) > rooms_read THEN
        INSERT INTO rooms (id, city_key, city, segment, ordinal)
        SELECT room_ids[n], group_keys[room_group[n]], room_cities[n],
            group_segments[room_group[n]], room_ordinal[n]
        FROM generate_series(rooms_read + 1, array_length(room_ids, 1)) AS n;
    END IF;
    -- The rooms read whose members the write changes, locked in the order of their
    -- ids as every write locks them: the triggers then update them. A write that keeps
    -- its users in their rooms changes none, and locks none.
    IF room_count[1:rooms_read] IS DISTINCT FROM read_count THEN
        PERFORM 1 FROM rooms r WHERE r.id = ANY(ARRAY(
            SELECT room_ids[n] FROM generate_series(1, rooms_read) AS n
            WHERE room_count[n] <> read_count[n]))
        ORDER BY r.id FOR UPDATE;
    END IF;

    RETURN QUERY
    SELECT p.n, NULL::varchar, NULL::integer, room_ids[p.n_room], room_cities[p.n_room],
        room_count[p.n_room]
    FROM unnest(row_room) WITH ORDINALITY AS p(n_room, n)
    UNION ALL
    SELECT NULL::bigint, s.user_id, s.cluster, s.room_id, NULL::varchar, NULL::integer
    FROM unnest(stored_ids, stored_clusters, stored_room_ids) AS s(user_id, cluster, room_id);
END $$
"""
SIGNATURE = "place_in_rooms(json, integer)"


def _revision_0009_function() -> str:
    """0009's function, which a downgrade brings back."""
    path = Path(__file__).with_name("0009_placement_in_one_statement.py")
    spec = importlib.util.spec_from_file_location("revision_0009", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PLACE_IN_ROOMS


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION place_in_rooms(json, bigint[], integer)")
        op.execute(PLACE_IN_ROOMS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {SIGNATURE}")
        op.execute(_revision_0009_function())
