"""Rooms placed inside the write on PostgreSQL: a function that takes the groups' locks,
locks the users' rows, reads their rooms and the groups' open rooms, places each row
and opens the rooms it needs, in the same order and by the same rule as
``store/rooms.py`` does in Python. A write with a city is then one statement
(``store/writes.py``), so the groups' locks are held for that statement and its commit
only, not across the client's round trips. SQLite has no functions of its own: its
writers take turns, and place in Python.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Arguments: the rows as the write gives them (a JSON array in order, each with
# user_id, city_key, cluster, city), the groups' advisory lock keys in the order to take
# them, and the room size. Returns one row per given row (its position from 1, its room,
# the room's city as its first member wrote it and its members after the write), then
# one per stored user among them (position NULL: their segment and room before it).
#
# The rows' users, groups and the rooms read are numbered; each group keeps its rooms
# with a free place as a list by ordinal (free_head, next_free), so that a row finds its
# room in constant time in a write of any size.
PLACE_IN_ROOMS = """
CREATE FUNCTION place_in_rooms(given json, lock_keys bigint[], room_size integer)
RETURNS TABLE (
    "position" bigint, user_id varchar, cluster integer,
    room_id varchar, room_city varchar, room_members integer
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    -- The rows, in order: each one's user, group and city, and its room after it.
    row_user integer[]; row_group integer[]; row_city varchar[]; row_room integer[];
    -- The rows' users by id, and the room each one is in as the rows are placed.
    user_ids varchar[]; user_room integer[];
    -- The stored users among them: their number, segment and room before the write.
    stored_user integer[]; stored_ids varchar[]; stored_clusters integer[];
    stored_room_ids varchar[]; stored_room integer[];
    -- The rows' groups, by city key and segment: their last ordinal, and the first of
    -- their rooms with a free place.
    group_keys varchar[]; group_segments integer[]; group_last integer[];
    free_head integer[];
    -- The rooms read, then those opened: each one's group (NULL: none of the rows'),
    -- ordinal, city and members, and the next room of its group with a free place.
    room_ids varchar[]; room_group integer[]; room_ordinal integer[]; room_cities varchar[];
    room_count integer[]; next_free integer[]; listed boolean[];
    rooms_read integer;
    this_user integer; this_group integer; held integer; joined integer; earlier integer;
BEGIN
    PERFORM pg_advisory_xact_lock(k.key)
    FROM unnest(lock_keys) WITH ORDINALITY AS k(key, n) ORDER BY k.n;

    -- The rows: each one's user and group (numbered by user id, and by city key and
    -- segment) and city, in order; the users and the groups.
    WITH given_rows AS (
        SELECT r.*, dense_rank() OVER (ORDER BY r.user_id) AS user_number,
            CASE WHEN r.city_key IS NOT NULL THEN dense_rank() OVER (
                PARTITION BY r.city_key IS NULL ORDER BY r.city_key, r.cluster) END
                AS group_number
        FROM ROWS FROM (json_to_recordset(given)
            AS (user_id varchar, city_key varchar, cluster integer, city varchar))
            WITH ORDINALITY AS r(user_id, city_key, cluster, city, n)
    )
    SELECT array_agg(r.user_number ORDER BY r.n), array_agg(r.group_number ORDER BY r.n),
        array_agg(r.city ORDER BY r.n), array_agg(DISTINCT r.user_id ORDER BY r.user_id),
        (SELECT coalesce(array_agg(g.city_key ORDER BY g.number), '{}')
            FROM (SELECT DISTINCT city_key, group_number AS number FROM given_rows
                WHERE group_number IS NOT NULL) AS g),
        (SELECT coalesce(array_agg(g.cluster ORDER BY g.number), '{}')
            FROM (SELECT DISTINCT cluster, group_number AS number FROM given_rows
                WHERE group_number IS NOT NULL) AS g)
    INTO row_user, row_group, row_city, user_ids, group_keys, group_segments
    FROM given_rows r;

    -- The stored users, their rows locked in the order of their ids, as every write
    -- locks them first.
    SELECT array_agg(s.n ORDER BY s.user_id), array_agg(s.user_id ORDER BY s.user_id),
        array_agg(s.cluster ORDER BY s.user_id), array_agg(s.room_id ORDER BY s.user_id)
    INTO stored_user, stored_ids, stored_clusters, stored_room_ids FROM (
        SELECT u.n, a.user_id, a.cluster, a.room_id
        FROM unnest(user_ids) WITH ORDINALITY AS u(user_id, n)
        JOIN assignments a ON a.user_id = u.user_id
        ORDER BY a.user_id FOR UPDATE OF a) AS s;

    -- The rooms read: of each group, those with a free place and its last, and the
    -- stored users' rooms; by group, then ordinal.
    WITH groups AS (
        SELECT * FROM unnest(group_keys, group_segments) WITH ORDINALITY
            AS gs(city_key, segment, n)
    ), known AS (
        SELECT r.id, r.city_key, r.segment, r.ordinal, r.city, r.members FROM rooms r
        JOIN (SELECT r.city_key, r.segment, max(r.ordinal) AS last FROM rooms r
            JOIN groups USING (city_key, segment) GROUP BY r.city_key, r.segment) AS l
            USING (city_key, segment)
        WHERE r.members < room_size OR r.ordinal = l.last
        UNION
        SELECT r.id, r.city_key, r.segment, r.ordinal, r.city, r.members FROM rooms r
        WHERE r.id = ANY(stored_room_ids)
    )
    SELECT coalesce(array_agg(k.id ORDER BY gs.n, k.ordinal), '{}'),
        coalesce(array_agg(gs.n ORDER BY gs.n, k.ordinal), '{}'),
        coalesce(array_agg(k.ordinal ORDER BY gs.n, k.ordinal), '{}'),
        coalesce(array_agg(k.city ORDER BY gs.n, k.ordinal), '{}'),
        coalesce(array_agg(k.members ORDER BY gs.n, k.ordinal), '{}')
    INTO room_ids, room_group, room_ordinal, room_cities, room_count
    FROM known k LEFT JOIN groups gs USING (city_key, segment);
    rooms_read := coalesce(array_length(room_ids, 1), 0);
    SELECT array_agg(rr.n ORDER BY s.n) INTO stored_room
    FROM unnest(stored_room_ids) WITH ORDINALITY AS s(id, n)
    LEFT JOIN unnest(room_ids) WITH ORDINALITY AS rr(id, n) ON rr.id = s.id;

    user_room := array_fill(NULL::integer, ARRAY[coalesce(array_length(user_ids, 1), 0)]);
    FOR i IN 1 .. coalesce(array_length(stored_user, 1), 0) LOOP
        user_room[stored_user[i]] := stored_room[i];
    END LOOP;
    free_head := array_fill(NULL::integer, ARRAY[coalesce(array_length(group_keys, 1), 0)]);
    group_last := array_fill(0, ARRAY[coalesce(array_length(group_keys, 1), 0)]);
    next_free := array_fill(NULL::integer, ARRAY[rooms_read]);
    listed := array_fill(false, ARRAY[rooms_read]);
    FOR room IN REVERSE rooms_read .. 1 LOOP
        this_group := room_group[room];
        CONTINUE WHEN this_group IS NULL;
        group_last[this_group] := greatest(group_last[this_group], room_ordinal[room]);
        IF room_count[room] < room_size THEN
            next_free[room] := free_head[this_group];
            free_head[this_group] := room;
            listed[room] := true;
        END IF;
    END LOOP;

    row_room := array_fill(NULL::integer, ARRAY[coalesce(array_length(row_user, 1), 0)]);
    FOR i IN 1 .. coalesce(array_length(row_user, 1), 0) LOOP
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

    INSERT INTO rooms (id, city_key, city, segment, ordinal)
    SELECT room_ids[n], group_keys[room_group[n]], room_cities[n],
        group_segments[room_group[n]], room_ordinal[n]
    FROM generate_series(rooms_read + 1, coalesce(array_length(room_ids, 1), 0)) AS n;
    -- The rooms read whose members the write changes, locked in the order of their
    -- ids as every write locks them: the triggers then update them.
    PERFORM 1 FROM rooms r WHERE r.id = ANY(ARRAY(
        SELECT room_ids[n] FROM unnest(row_room || stored_room) AS n WHERE n <= rooms_read))
    ORDER BY r.id FOR UPDATE;

    RETURN QUERY
    SELECT p.n, NULL::varchar, NULL::integer, room_ids[p.n_room], room_cities[p.n_room],
        room_count[p.n_room]
    FROM unnest(row_room) WITH ORDINALITY AS p(n_room, n)
    UNION ALL
    SELECT NULL::bigint, s.user_id, s.cluster, s.room_id, NULL::varchar, NULL::integer
    FROM unnest(stored_ids, stored_clusters, stored_room_ids) AS s(user_id, cluster, room_id);
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PLACE_IN_ROOMS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION place_in_rooms(json, bigint[], integer)")
