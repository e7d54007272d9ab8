CREATE TABLE systems (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                x REAL NOT NULL,
                y REAL NOT NULL,
                z REAL NOT NULL,
                region TEXT NOT NULL,
                fauna TEXT,
                flora TEXT,
                sentinel TEXT,
                materials TEXT,
                base_location TEXT,
                photo TEXT,
                attributes TEXT,
                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                modified_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
            );
CREATE TABLE planets (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                system_id TEXT NOT NULL,
                name TEXT NOT NULL,
                sentinel TEXT,
                fauna TEXT,
                flora TEXT,
                properties TEXT,
                materials TEXT,
                base_location TEXT,
                photo TEXT,
                notes TEXT,
                FOREIGN KEY (system_id) REFERENCES systems(id) ON DELETE CASCADE,
                UNIQUE(system_id, name)
            );
CREATE TABLE moons (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                planet_id INTEGER NOT NULL,
                name TEXT NOT NULL,
                sentinel TEXT,
                fauna TEXT,
                flora TEXT,
                properties TEXT,
                materials TEXT,
                base_location TEXT,
                photo TEXT,
                notes TEXT,
                orbit_radius REAL DEFAULT 0.5,
                orbit_speed REAL DEFAULT 0.05,
                FOREIGN KEY (planet_id) REFERENCES planets(id) ON DELETE CASCADE
            );
CREATE TABLE space_stations (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                system_id TEXT NOT NULL,
                name TEXT NOT NULL,
                x REAL NOT NULL,
                y REAL NOT NULL,
                z REAL NOT NULL,
                race TEXT,
                sell_percent INTEGER,
                buy_percent INTEGER,
                FOREIGN KEY (system_id) REFERENCES systems(id) ON DELETE CASCADE
            );
CREATE TABLE _metadata (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
            );
CREATE TABLE discoveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    discovery_type TEXT NOT NULL,
    discovery_name TEXT,
    system_id TEXT,
    planet_id INTEGER,
    moon_id INTEGER,
    location_type TEXT NOT NULL,
    location_name TEXT,
    description TEXT NOT NULL,
    coordinates TEXT,
    condition TEXT,
    time_period TEXT,
    significance TEXT,
    photo_url TEXT,
    evidence_urls TEXT,
    discovered_by TEXT,
    discord_user_id TEXT,
    discord_guild_id TEXT,
    submission_timestamp DATETIME DEFAULT CURRENT_TIMESTAMP,
    pattern_matches INTEGER DEFAULT 0,
    mystery_tier INTEGER DEFAULT 0,
    analysis_status TEXT DEFAULT 'pending',
    tags TEXT,
    metadata TEXT, species_type TEXT, size_scale TEXT, preservation_quality TEXT, estimated_age TEXT, language_status TEXT, completeness TEXT, author_origin TEXT, key_excerpt TEXT, structure_type TEXT, architectural_style TEXT, structural_integrity TEXT, purpose_function TEXT, tech_category TEXT, operational_status TEXT, power_source TEXT, reverse_engineering TEXT, species_name TEXT, behavioral_notes TEXT, habitat_biome TEXT, threat_level TEXT, resource_type TEXT, deposit_richness TEXT, extraction_method TEXT, economic_value TEXT, ship_class TEXT, hull_condition TEXT, salvageable_tech TEXT, pilot_status TEXT, hazard_type TEXT, severity_level TEXT, duration_frequency TEXT, protection_required TEXT, update_name TEXT, feature_category TEXT, gameplay_impact TEXT, first_impressions TEXT, story_type TEXT, lore_connections TEXT, creative_elements TEXT, collaborative_work TEXT,
    FOREIGN KEY (system_id) REFERENCES systems(id) ON DELETE SET NULL,
    FOREIGN KEY (planet_id) REFERENCES planets(id) ON DELETE SET NULL,
    FOREIGN KEY (moon_id) REFERENCES moons(id) ON DELETE SET NULL
);
CREATE INDEX idx_systems_region ON systems(region);
CREATE INDEX idx_systems_coords ON systems(x, y, z);
CREATE INDEX idx_systems_name ON systems(name);
CREATE INDEX idx_planets_system ON planets(system_id);
CREATE INDEX idx_moons_planet ON moons(planet_id);
CREATE INDEX idx_space_stations_system ON space_stations(system_id);
